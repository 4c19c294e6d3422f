/**
 * A sequence's logits are bit-identical whatever shares its batch (batch sizes 1, 8, 32) and
 * however its prefill is chunked, on both kernel backends, with f32 and with quantised weights. Later issues (PD disaggregation,
 * resumption elsewhere) rely on this.
 */
import { describe, expect, it } from "vitest";
import type { ModelInstance } from "../../../shared/engine/instance.ts";
import { mulberry32 } from "../../../shared/random.ts";
import { instanceFor, KERNEL_KINDS } from "../../helpers/engine.ts";
import { HAVE_REFERENCE_MODELS, readReferenceModel } from "../../helpers/models.ts";
import { quantModelBytes } from "../../helpers/quant.ts";

const MODELS = [
  ...["tiny-qwen3moe-f32.gguf", "tiny-mixtral-f32.gguf", "stories260K-f32.gguf"].map((name) => ({
    name,
    reference: true,
    read: () => readReferenceModel(name),
  })),
  // test/fixtures/quant: the F16, Q8_0-activation and Q8_K-activation paths (Q4_K_M mixes Q4_K
  // and Q6_K matrices)
  ...["F16", "Q8_0", "Q4_K_M"].map((type) => ({
    name: `quant ${type}`,
    reference: false,
    read: () => quantModelBytes(type),
  })),
];

/** Runs `target` (prompt of length L) in chunks, with `others` random sequences alongside each forward. */
function targetLogits(
  inst: ModelInstance,
  target: number[],
  chunks: number[],
  numOthers: number,
  seed: number,
) {
  const t = inst.transformer;
  const bs = t.shape.blockSize;
  const perSeq = Math.ceil(t.shape.maxModelLen / bs);
  const rng = mulberry32(seed);
  const vocab = t.config.vocabSize;
  // disjoint block tables: sequence i owns blocks [i * perSeq, (i + 1) * perSeq), scrambled
  const tables = Array.from({ length: numOthers + 1 }, (_, i) =>
    Array.from({ length: perSeq }, (_, j) => i * perSeq + ((j * 7) % perSeq)),
  );
  const others = Array.from({ length: numOthers }, () => ({
    pos: 0,
    len: 1 + Math.floor(rng() * 12),
  }));
  const results: Float32Array[] = [];
  let pos = 0;
  for (const n of chunks) {
    const tokenIds: number[] = [];
    const positions: number[] = [];
    const seqIndex: number[] = [];
    const logitRows: number[] = [];
    // others first, so the target sits at a different row offset in each batch
    others.forEach((o, i) => {
      for (let j = 0; j < o.len; j++) {
        tokenIds.push(Math.floor(rng() * vocab));
        positions.push(o.pos + j);
        seqIndex.push(i + 1);
      }
      o.pos += o.len;
      o.len = 1;
      logitRows.push(tokenIds.length - 1);
    });
    for (let j = 0; j < n; j++) {
      tokenIds.push(target[pos + j]!);
      positions.push(pos + j);
      seqIndex.push(0);
    }
    pos += n;
    logitRows.push(tokenIds.length - 1);
    const out = t.forward({
      numTokens: tokenIds.length,
      tokenIds,
      positions,
      seqIndex,
      blockTables: tables,
      logitRows,
    });
    const k = logitRows.length - 1;
    results.push(Float32Array.from(out.subarray(k * vocab, (k + 1) * vocab)));
  }
  return results;
}

describe("determinism", () => {
  for (const kind of KERNEL_KINDS) {
    for (const model of MODELS) {
      const title = `${model.name} logits do not depend on batch size or prefill chunking (${kind})`;
      it.skipIf(model.reference && !HAVE_REFERENCE_MODELS)(title, async () => {
        const { inst } = await instanceFor(model.read(), kind, {
          maxNumSeqs: 33,
          maxNumBatchedTokens: 512,
        });
        const prompt = inst.tokenizer.encode(
          "Once upon a time there was a little dog named Max who",
        );
        const L = prompt.length;
        const decode = [...prompt, 300, 301, 302, 303];
        // prefill in one chunk, then 4 decode steps; compare the final prefill row and each decode row
        const plan = (first: number[]) => [...first, 1, 1, 1, 1];
        const base = targetLogits(inst, decode, plan([L]), 0, 1);
        for (const [chunks, others] of [
          [plan([L]), 7],
          [plan([L]), 31],
          [plan([1, 2, L - 3]), 0],
          [plan(Array.from({ length: L }, () => 1)), 7],
          [plan([5, L - 5]), 31],
        ] as const) {
          const got = targetLogits(inst, decode, chunks, others, 99 + chunks.length);
          const tail = got.slice(got.length - 5);
          tail.forEach((row, i) => {
            expect(
              Buffer.from(row.buffer).equals(Buffer.from(base[i]!.buffer)),
              `row ${i} chunks ${chunks.length} others ${others}`,
            ).toBe(true);
          });
        }
      });
    }
  }
});
