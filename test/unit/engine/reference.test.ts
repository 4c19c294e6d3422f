/**
 * The engine reproduces llama.cpp's greedy decodes (../shared/models/reference/greedy.json) on
 * both kernel backends, through the Transformer and through the full Engine loop.
 */

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_MODEL_PATH,
  runToCompletion,
  SYNTHETIC_MODEL_PATH,
} from "../../../hosts/node-engine.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { greedyWithLogits, instanceFor, KERNEL_KINDS } from "../../helpers/engine.ts";
import {
  HAVE_REFERENCE_MODELS,
  readGreedyCases,
  readReferenceModel,
} from "../../helpers/models.ts";

describe.skipIf(!HAVE_REFERENCE_MODELS)("reference greedy decodes", () => {
  for (const kind of KERNEL_KINDS) {
    it(`match every expected id with ${kind} kernels`, async () => {
      for (const cs of readGreedyCases()) {
        const { inst } = await instanceFor(readReferenceModel(cs.model), kind, { maxNumSeqs: 4 });
        const promptIds = inst.tokenizer.encode(cs.prompt);
        expect(promptIds).toEqual(cs.prompt_tokens);
        const eos = inst.tokenizer.eosId ?? -1;
        const { ids, logits } = greedyWithLogits(inst, promptIds, cs.max_new_tokens, eos);
        const at = ids.findIndex((id, i) => id !== cs.expected_ids[i]);
        if (at >= 0 || ids.length !== cs.expected_ids.length) {
          const p = at >= 0 ? at : Math.min(ids.length, cs.expected_ids.length);
          const row = logits[p];
          const want = cs.expected_ids[p] ?? -1;
          const got = ids[p] ?? -1;
          throw new Error(
            `${cs.model} "${cs.prompt}" (${kind}): first difference at generated position ${p}: ` +
              `expected id ${want} (logit ${row?.[want]}), got ${got} (logit ${row?.[got]})`,
          );
        }
        // the full engine loop (scheduler, block tables, sampler, detokeniser) agrees
        const run = await runToCompletion(inst.engine, promptIds, {
          ...GREEDY,
          maxTokens: cs.max_new_tokens,
        });
        expect(run.ids).toEqual(cs.expected_ids);
      }
    });
  }

  it("matches llama2.c run.c's logits on stories260K within 1e-4", async () => {
    const { REFERENCE_MODELS_DIR } = await import("../../helpers/models.ts");
    const raw = readFileSync(
      `${REFERENCE_MODELS_DIR}/reference/stories260K-once-upon-a-time.logits.f32`,
    );
    const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const { inst } = await instanceFor(readReferenceModel("stories260K-f32.gguf"), "wasm");
    const prompt = inst.tokenizer.encode("Once upon a time");
    const { ids } = greedyWithLogits(inst, prompt, 59, -1);
    // feed prompt + generated tokens one per position and compare every position's logits
    const tokens = [...prompt, ...ids].slice(0, 64);
    const t = inst.transformer;
    const table = Array.from({ length: 32 }, (_, i) => i);
    let maxErr = 0;
    for (let p = 0; p < 64; p++) {
      const out = t.forward({
        numTokens: 1,
        tokenIds: [tokens[p]!],
        positions: [p],
        seqIndex: [0],
        blockTables: [table],
        logitRows: [0],
      });
      for (let v = 0; v < 512; v++)
        maxErr = Math.max(maxErr, Math.abs(out[v]! - ref[p * 512 + v]!));
    }
    expect(maxErr).toBeLessThan(1e-4);
  });
});

describe("synthetic model", () => {
  interface FixtureCase {
    name: string;
    prompt: string;
    max_new_tokens: number;
    stop_at_eos: boolean;
    prompt_ids: number[];
    expected_ids: number[];
  }
  const fixture = JSON.parse(
    readFileSync(new URL("../../fixtures/synthetic-moe-llama-cpp.json", import.meta.url), "utf8"),
  ) as { cases: FixtureCase[] };

  for (const kind of KERNEL_KINDS) {
    it(`generates llama.cpp's greedy ids with ${kind} kernels`, async () => {
      const { inst } = await instanceFor(readFileSync(SYNTHETIC_MODEL_PATH), kind, {
        maxNumSeqs: 2,
      });
      for (const cs of fixture.cases) {
        const promptIds = inst.tokenizer.encode(cs.prompt, { parseSpecial: true });
        expect(promptIds, cs.name).toEqual(cs.prompt_ids);
        const params = { ...GREEDY, maxTokens: cs.max_new_tokens, ignoreEos: !cs.stop_at_eos };
        const run = await runToCompletion(inst.engine, promptIds, params);
        expect(run.ids, cs.name).toEqual(cs.expected_ids);
      }
    });
  }
});

describe("embedded default model (the lemma-chain MoE)", () => {
  // scripts/fixtures/llama-cpp-lemma.ts: llama.cpp's greedy ids up to and including EOS.
  const fixture = JSON.parse(
    readFileSync(new URL("../../fixtures/lemma-moe-llama-cpp.json", import.meta.url), "utf8"),
  ) as {
    model_sha256: string;
    cases: { name: string; prompt: string; prompt_ids: number[]; expected_ids: number[] }[];
  };

  it("is the file the fixture was made from", () => {
    const sha = createHash("sha256").update(readFileSync(DEFAULT_MODEL_PATH)).digest("hex");
    expect(sha).toBe(fixture.model_sha256);
  });

  for (const kind of KERNEL_KINDS) {
    it(`generates llama.cpp's greedy ids with ${kind} kernels`, async () => {
      const { inst } = await instanceFor(readFileSync(DEFAULT_MODEL_PATH), kind, {
        maxNumSeqs: 2,
        maxModelLen: 512,
      });
      for (const cs of fixture.cases) {
        const promptIds = inst.tokenizer.encode(cs.prompt);
        expect(promptIds, cs.name).toEqual(cs.prompt_ids);
        const run = await runToCompletion(inst.engine, promptIds, { ...GREEDY, maxTokens: 128 });
        expect(run.ids, cs.name).toEqual(cs.expected_ids);
      }
    });
  }
});
