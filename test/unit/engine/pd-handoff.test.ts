/**
 * PD disaggregation at the engine level: a prefill instance computes the prompt and the first
 * token, its KV is exported, and a separate decode instance imports it and continues. Greedy
 * output equals colocated decoding on every reference model, the decode side computes no prompt
 * token, and the handoff moves exactly prompt tokens x layers x 2 x KV width x 4 bytes.
 */
import { describe, expect, it } from "vitest";
import { runToCompletion } from "../../../hosts/node-engine.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import type { SampledToken } from "../../../shared/model/sampler.ts";
import { instanceFor } from "../../helpers/engine.ts";
import {
  HAVE_REFERENCE_MODELS,
  readGreedyCases,
  readReferenceModel,
} from "../../helpers/models.ts";

describe.skipIf(!HAVE_REFERENCE_MODELS)("prefill -> decode handoff", () => {
  it("decodes exactly as colocated for every reference case", async () => {
    for (const cs of readGreedyCases()) {
      const bytes = readReferenceModel(cs.model);
      const params = { ...GREEDY, maxTokens: cs.max_new_tokens };
      const { inst: colocated } = await instanceFor(bytes, "wasm", { maxNumSeqs: 2 });
      const { inst: prefill } = await instanceFor(bytes, "wasm", { maxNumSeqs: 2 });
      const { inst: decode } = await instanceFor(bytes, "wasm", { maxNumSeqs: 2, blockSize: 8 });
      const prompt = prefill.tokenizer.encode(cs.prompt);
      const want = await runToCompletion(colocated.engine, prompt, params);

      // prefill: one token, KV kept for export
      prefill.engine.add("p", prompt, { ...params, maxTokens: 1 }, { holdKv: true });
      let first: SampledToken | null = null;
      let prefillTokens = 0;
      while (prefill.engine.hasWork()) {
        const r = await prefill.engine.step();
        prefillTokens += r.numScheduledTokens;
        for (const o of r.outputs)
          first = { tokenId: o.newTokenIds[0]!, logprob: Number.NaN, topLogprobs: [] };
      }
      expect(prefillTokens).toBe(prompt.length);
      // the finished prefill keeps the prompt's KV blocks allocated until they are released
      const held = prefill.scheduler.getHeld("p");
      const blocks = prefill.scheduler.blocks;
      expect(held?.numComputedTokens).toBe(prompt.length);
      expect(held?.blockTable).toHaveLength(Math.ceil(prompt.length / blocks.blockSize));
      expect(blocks.numFreeBlocks).toBe(blocks.numBlocks - held!.blockTable.length);
      const kv = new Float32Array(prefill.transformer.kvSize(prompt.length));
      prefill.transformer.exportKv(held!.blockTable, prompt.length, kv);
      prefill.scheduler.releaseHeld("p");
      expect(prefill.scheduler.blocks.numFreeBlocks).toBe(prefill.scheduler.blocks.numBlocks);
      const c = prefill.config;
      expect(kv.byteLength).toBe(
        prompt.length * c.numHiddenLayers * 2 * c.numKeyValueHeads * c.headDim * 4,
      );

      // decode: import (into a different block size and layout) and continue
      const out = decode.engine.addPrefilled("d", prompt, first!, params, (table) =>
        decode.transformer.importKv(table, prompt.length, kv),
      );
      expect(out?.newTokenIds).toEqual([want.ids[0]]);
      const ids = [...(out?.newTokenIds ?? [])];
      let text = out?.text ?? "";
      let decodeTokens = 0;
      while (decode.engine.hasWork()) {
        const r = await decode.engine.step();
        decodeTokens += r.numScheduledTokens;
        for (const o of r.outputs) {
          ids.push(...o.newTokenIds);
          text += o.text;
        }
      }
      expect(ids, `${cs.model} "${cs.prompt}"`).toEqual(want.ids);
      expect(text).toBe(want.text);
      // the decode side computed one token per generated token after the first, none of the prompt
      expect(decodeTokens).toBe(want.ids.length - 1);
      expect(decode.scheduler.blocks.numFreeBlocks).toBe(decode.scheduler.blocks.numBlocks);
    }
  });

  it("waits for room instead of overcommitting the instance", async () => {
    const bytes = readReferenceModel("stories260K-f32.gguf");
    const { inst } = await instanceFor(bytes, "js", { maxNumSeqs: 1 });
    inst.engine.add("busy", [1, 403, 407], { ...GREEDY, maxTokens: 3 });
    await inst.engine.step(); // "busy" now runs and fills the only sequence slot
    const first = { tokenId: 432, logprob: Number.NaN, topLogprobs: [] };
    let imported = 0;
    const tryAdd = () =>
      inst.engine.addPrefilled("d", [1, 403, 407, 261, 378], first, GREEDY, () => {
        imported++;
      });
    expect(tryAdd()).toBeNull();
    expect(imported).toBe(0);
    while (inst.engine.hasWork()) await inst.engine.step();
    expect(tryAdd()?.newTokenIds).toEqual([432]);
    expect(imported).toBe(1);
  });
});
