/**
 * The generated benchmark checkpoint (scripts/make-bench-model.ts): an independent GGUF reader
 * (@huggingface/gguf) sees a llama model with the requested shapes, no output.weight (tied),
 * and the vocab file's tokenizer metadata unchanged; it is the same bytes for the same seed; the
 * engine loads it and decodes.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gguf as hfGguf } from "@huggingface/gguf";
import { afterAll, describe, expect, it } from "vitest";
import { loadNodeInstance, runToCompletion } from "../../../hosts/node-engine.ts";
import {
  type BenchModelDims,
  buildBenchModel,
  checkDims,
  DEFAULT_BENCH_DIMS,
} from "../../../scripts/make-bench-model.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { REFERENCE_MODELS_DIR } from "../../helpers/models.ts";

const GPT2 = join(REFERENCE_MODELS_DIR, "vocab/ggml-vocab-gpt-2.gguf");
const PHI3 = join(REFERENCE_MODELS_DIR, "vocab/ggml-vocab-phi-3.gguf");
const SMALL: BenchModelDims = {
  ...DEFAULT_BENCH_DIMS,
  dim: 256,
  layers: 2,
  ff: 512,
  heads: 2,
  kvHeads: 2,
};
const dir = mkdtempSync(join(tmpdir(), "bench-model-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function readWithHf(bytes: Uint8Array) {
  const path = join(dir, "m.gguf");
  writeFileSync(path, bytes);
  const parsed = await hfGguf(path, { allowLocalFile: true });
  return {
    metadata: parsed.metadata as unknown as Record<string, unknown>,
    tensors: new Map(parsed.tensorInfos.map((t) => [t.name, t.shape.map(Number)])),
  };
}

describe.skipIf(!existsSync(GPT2) || !existsSync(PHI3))("bench model", () => {
  it("is a tied llama GGUF with the shapes asked for and the gpt-2 vocab copied", async () => {
    const vocab = await readWithHf(new Uint8Array(readFileSync(GPT2)));
    const m = await readWithHf(buildBenchModel(new Uint8Array(readFileSync(GPT2)), SMALL));
    expect(m.metadata["general.architecture"]).toBe("llama");
    expect(m.metadata["general.file_type"]).toBe(0);
    expect(m.metadata["llama.block_count"]).toBe(2);
    expect(m.metadata["llama.attention.head_count_kv"]).toBe(2);
    for (const key of Object.keys(vocab.metadata).filter((k) => k.startsWith("tokenizer.")))
      expect(m.metadata[key], key).toEqual(vocab.metadata[key]);
    expect((m.metadata["tokenizer.ggml.tokens"] as string[]).length).toBe(50257);
    expect(m.tensors.get("token_embd.weight")).toEqual([256, 50257]);
    expect(m.tensors.has("output.weight")).toBe(false);
    expect(m.tensors.get("blk.1.attn_k.weight")).toEqual([256, 256]);
    expect(m.tensors.get("blk.1.ffn_down.weight")).toEqual([512, 256]);
    expect(m.tensors.size).toBe(2 + 2 * 9);
  });

  it("is the same bytes for the same seed and loads and decodes in the engine", async () => {
    const vocab = new Uint8Array(readFileSync(PHI3)); // an SPM vocab the engine reads today
    const a = buildBenchModel(vocab, SMALL);
    expect(Buffer.compare(a, buildBenchModel(vocab, SMALL))).toBe(0);
    expect(Buffer.compare(a, buildBenchModel(vocab, { ...SMALL, seed: 2 }))).not.toBe(0);
    const inst = await loadNodeInstance(a, { kernels: "js", maxNumSeqs: 1 });
    expect(inst.config.tieWordEmbeddings).toBe(true);
    const out = await runToCompletion(inst.engine, inst.tokenizer.encode("Hello"), {
      ...GREEDY,
      maxTokens: 4,
      ignoreEos: true,
    });
    expect(out.ids).toHaveLength(4);
  });

  it("refuses widths that are not multiples of 256", () => {
    expect(() => checkDims({ ...SMALL, dim: 384, heads: 3, kvHeads: 3 })).toThrow(
      /multiple of 256/,
    );
    expect(() => checkDims({ ...SMALL, kvHeads: 1 })).toThrow(/kv width/);
  });
});
