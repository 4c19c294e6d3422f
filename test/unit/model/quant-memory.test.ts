/**
 * The memory plan counts weights at their stored size: quantised matrices stay quantised in the
 * arena, the plan is exact enough that a budget of exactly its total loads, and a model too big
 * in f32 fits an NPU once quantised.
 */
import { describe, expect, it } from "vitest";
import { createKernels } from "../../../hosts/node-kernels.ts";
import { buildQuantCheckpoint } from "../../../scripts/fixtures/make-quant-checkpoint.ts";
import { createInstance, planMemory } from "../../../shared/engine/instance.ts";
import { GgmlType, parseGguf } from "../../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../../shared/model/config.ts";
import { KernelMemoryError } from "../../../shared/model/kernels.ts";
import { quantModelBytes } from "../../helpers/quant.ts";

const OPTS = { maxNumSeqs: 1, maxNumBatchedTokens: 32, maxModelLen: 64 };

function plan(bytes: Uint8Array, capacity = 2 ** 30) {
  const file = parseGguf(bytes);
  return planMemory(file, modelConfigFromGguf(file), capacity, OPTS);
}

/** Bytes of the file's tensor data (what the weights are on disk). */
function tensorBytes(bytes: Uint8Array): number {
  return [...parseGguf(bytes).tensors.values()].reduce((a, t) => a + t.numBytes, 0);
}

describe("memory plan with quantised weights", () => {
  const f32 = buildQuantCheckpoint();
  const f32Weights = plan(f32).weightBytes;

  for (const type of ["F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M", "Q6_K"]) {
    it(`${type}: weights are planned at their stored size and a budget of exactly the plan loads`, async () => {
      const bytes = quantModelBytes(type);
      const p = plan(bytes);
      const stored = tensorBytes(bytes);
      expect(p.weightBytes).toBeGreaterThanOrEqual(stored);
      expect(p.weightBytes).toBeLessThan(stored + 16 * 16); // 16-byte granules of 12 tensors
      expect(p.weightBytes).toBeLessThan(f32Weights * (type === "F16" ? 0.51 : 0.28));
      const need = p.weightBytes + p.workspaceBytes + p.numBlocks * p.kvBytesPerBlock;
      for (const kind of ["js", "wasm"] as const) {
        const inst = createInstance(bytes, await createKernels(kind, need), OPTS);
        expect(inst.memory.numBlocks).toBe(4);
      }
      expect(() => plan(bytes, need - 1)).toThrow(KernelMemoryError);
    });
  }

  it("refuses the f32 checkpoint under a budget that holds it quantised (the upload check)", () => {
    const q4 = quantModelBytes("Q4_0");
    const p = plan(q4);
    const budget = p.weightBytes + p.workspaceBytes + 4 * p.kvBytesPerBlock;
    expect(plan(q4, budget).numBlocks).toBe(4);
    expect(() => plan(f32, budget)).toThrow(/needs .* MiB \(weights 3\.0,/);
    expect(parseGguf(f32).tensors.get("blk.0.ffn_up.weight")?.type).toBe(GgmlType.F32);
  });
});
