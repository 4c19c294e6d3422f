/** Prefix caching changes no output: a prompt served from cached blocks decodes exactly as fresh. */
import { describe, expect, it } from "vitest";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { cacheSaltFor } from "../../../shared/serving/prefix-tree.ts";
import { instanceFor } from "../../helpers/engine.ts";
import { HAVE_REFERENCE_MODELS, readReferenceModel } from "../../helpers/models.ts";

async function run(
  inst: Awaited<ReturnType<typeof instanceFor>>["inst"],
  id: string,
  prompt: number[],
  cacheSalt = "",
) {
  inst.engine.add(id, prompt, { ...GREEDY, maxTokens: 24 }, { cacheSalt });
  const ids: number[] = [];
  let cached = -1;
  while (inst.engine.hasWork()) {
    for (const o of (await inst.engine.step()).outputs) {
      ids.push(...o.newTokenIds);
      cached = o.numCachedTokens;
    }
  }
  return { ids, cached };
}

describe.skipIf(!HAVE_REFERENCE_MODELS)("prefix cache", () => {
  for (const model of ["stories260K-f32.gguf", "tiny-qwen3moe-f32.gguf"]) {
    it(`serves shared prefixes from cached blocks with identical output (${model})`, async () => {
      const bytes = readReferenceModel(model);
      const { inst } = await instanceFor(bytes, "wasm", { maxNumSeqs: 4, blockSize: 8 });
      const { inst: fresh } = await instanceFor(bytes, "wasm", { maxNumSeqs: 4, blockSize: 8 });
      const text =
        "Once upon a time there was a little girl named Lily. She loved to play in the park with her";
      const prompt = inst.tokenizer.encode(text);
      expect(prompt.length).toBeGreaterThan(17);
      const first = await run(inst, "a", prompt);
      expect(first.cached).toBe(0);
      const again = await run(inst, "b", prompt);
      expect(again.cached).toBe(Math.floor((prompt.length - 1) / 8) * 8);
      expect(again.ids).toEqual(first.ids);
      // another tenant's identical prompt reuses nothing, and decodes the same
      const otherTenant = await run(inst, "t", prompt, cacheSaltFor("other"));
      expect(otherTenant.cached).toBe(0);
      expect(otherTenant.ids).toEqual(first.ids);
      // a prompt that shares only the beginning reuses those blocks and matches a cold run
      const other = inst.tokenizer.encode(`${text.slice(0, 40)} dog who liked to run`);
      const warm = await run(inst, "c", other);
      const cold = await run(fresh, "c", other);
      expect(warm.cached).toBeGreaterThan(0);
      expect(cold.cached).toBe(0);
      expect(warm.ids).toEqual(cold.ids);
      inst.scheduler.blocks.checkInvariants();
      expect(inst.scheduler.blocks.numFreeBlocks).toBe(inst.scheduler.blocks.numBlocks);
    });
  }
});
