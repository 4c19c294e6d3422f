/** The engine inside workerd: the same shared/ code and the same wasm module the Npu runs. */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { KERNELS_BUILD, kernelsModule } from "../../durable-objects/kernels-module.ts";
import { createInstance } from "../../shared/engine/instance.ts";
import { GREEDY } from "../../shared/engine/sequence.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../../shared/model/kernels-wasm.ts";

interface GreedyCase {
  model: string;
  prompt: string;
  prompt_tokens: number[];
  max_new_tokens: number;
  expected_ids: number[];
}

const FILES: Record<string, ArrayBuffer | undefined> = {
  "stories260K-f32.gguf": env.REF_STORIES,
  "tiny-mixtral-f32.gguf": env.REF_MIXTRAL,
  "tiny-qwen3moe-f32.gguf": env.REF_QWEN3MOE,
};

describe("engine in workerd", () => {
  it("runs the relaxed-SIMD build of the kernels (workerd compiles relaxed SIMD)", () => {
    expect(KERNELS_BUILD).toBe("relaxed-simd");
  });

  it.skipIf(!env.REF_GREEDY)(
    "reproduces llama.cpp's greedy ids for every reference case",
    async () => {
      const cases = (JSON.parse(env.REF_GREEDY as string) as { cases: GreedyCase[] }).cases;
      expect(cases.length).toBeGreaterThanOrEqual(6);
      for (const cs of cases) {
        const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
        const kernels = createWasmKernels(wasm, 64 * 2 ** 20);
        const inst = createInstance(new Uint8Array(FILES[cs.model] as ArrayBuffer), kernels, {
          maxNumSeqs: 4,
        });
        const promptIds = inst.tokenizer.encode(cs.prompt);
        expect(promptIds).toEqual(cs.prompt_tokens);
        inst.engine.add("s", promptIds, { ...GREEDY, maxTokens: cs.max_new_tokens });
        const ids: number[] = [];
        while (inst.engine.hasWork()) {
          for (const o of (await inst.engine.step()).outputs) ids.push(...o.newTokenIds);
        }
        expect(ids, `${cs.model} "${cs.prompt}"`).toEqual(cs.expected_ids);
      }
    },
  );
});
