/**
 * NPU-fork's rebind: an instance built from a GGUF header plus a copy of the weight region a
 * full load laid out in wasm kernel memory has byte-identical kernel memory and generates the same
 * tokens and logits as the full load, for the MoE default model (F16 experts interleaved) and a
 * dense Q4_K_M checkpoint (mixed weight types side by side).
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { WASM_KERNELS_URL } from "../../../hosts/node-kernels.ts";
import { createInstance } from "../../../shared/engine/instance.ts";
import { parseGguf } from "../../../shared/gguf/gguf.ts";
import { roundAllocBytes } from "../../../shared/model/kernels-js.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../../../shared/model/kernels-wasm.ts";
import { greedyWithLogits } from "../../helpers/engine.ts";
import { REPO_ROOT } from "../../helpers/models.ts";
import { quantModelBytes } from "../../helpers/quant.ts";

const ARENA_BYTES = 64 * 2 ** 20;
const OPTS = { maxNumSeqs: 2, maxNumBatchedTokens: 32, maxModelLen: 64 };
const wasmModule = WebAssembly.compile(readFileSync(WASM_KERNELS_URL));

async function arena() {
  const instance = await WebAssembly.instantiate(await wasmModule, WASM_KERNEL_IMPORTS);
  const kernels = createWasmKernels(instance, ARENA_BYTES);
  const ex = instance.exports as { memory: WebAssembly.Memory; heapBase: () => number };
  const base = roundAllocBytes(ex.heapBase());
  const bytes = (from: number, n: number) => new Uint8Array(ex.memory.buffer, base + from, n);
  return { kernels, bytes };
}

const MODELS: [string, () => Uint8Array][] = [
  ["synthetic-moe (F16, MoE)", () => readFileSync(`${REPO_ROOT}/models/synthetic-moe.gguf`)],
  ["Q4_K_M (dense, mixed types)", () => quantModelBytes("Q4_K_M")],
];

describe("an instance rebuilt from a forked weight region", () => {
  for (const [name, load] of MODELS) {
    it(`${name}: same kernel memory, tokens and logits as a full load`, async () => {
      const gguf = load();
      const cold = await arena();
      const coldInst = createInstance(gguf, cold.kernels, OPTS);
      const region = cold.bytes(0, coldInst.residentWeightBytes).slice();

      const fork = await arena();
      const header = gguf.slice(0, parseGguf(gguf).dataOffset);
      let filled: [number, number] | null = null;
      const forkInst = createInstance(
        {
          header,
          fill: (from: number, n: number) => {
            filled = [from, n];
            fork.bytes(from, n).set(region);
          },
        },
        fork.kernels,
        OPTS,
      );
      expect(filled).toEqual([0, region.byteLength]);
      expect(forkInst.residentWeightBytes).toBe(coldInst.residentWeightBytes);
      expect(fork.kernels.usedBytes).toBe(cold.kernels.usedBytes);
      const used = cold.kernels.usedBytes;
      expect(Buffer.from(fork.bytes(0, used)).equals(Buffer.from(cold.bytes(0, used)))).toBe(true);

      const prompt = coldInst.tokenizer.encode("Once upon a time");
      const a = greedyWithLogits(coldInst, prompt, 6, -1);
      const b = greedyWithLogits(forkInst, prompt, 6, -1);
      expect(b.ids).toEqual(a.ids);
      expect(b.logits).toEqual(a.logits);
    });
  }

  it("a layout without its region filled is not the model (the copy is what carries it)", async () => {
    const gguf = readFileSync(`${REPO_ROOT}/models/synthetic-moe.gguf`);
    const cold = await arena();
    const coldInst = createInstance(gguf, cold.kernels, OPTS);
    const fork = await arena();
    const header = gguf.slice(0, parseGguf(gguf).dataOffset);
    const empty = createInstance({ header, fill: () => {} }, fork.kernels, OPTS);
    const prompt = coldInst.tokenizer.encode("Once upon a time");
    const a = greedyWithLogits(coldInst, prompt, 1, -1);
    const b = greedyWithLogits(empty, prompt, 1, -1);
    expect(b.logits).not.toEqual(a.logits);
  });
});
