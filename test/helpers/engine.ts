/** Test helpers around the engine: instances on either kernel backend, greedy runs with logits. */

import { createKernels } from "../../hosts/node-kernels.ts";
import {
  createInstance,
  type InstanceOptions,
  type ModelInstance,
} from "../../shared/engine/instance.ts";
import type { Kernels } from "../../shared/model/kernels.ts";
import { argmax } from "../../shared/model/sampler.ts";

export const KERNEL_KINDS = ["js", "wasm"] as const;

export async function instanceFor(
  bytes: Uint8Array,
  kind: "js" | "wasm",
  opts: InstanceOptions = {},
): Promise<{ inst: ModelInstance; kernels: Kernels }> {
  const kernels = await createKernels(kind, 256 * 2 ** 20);
  return { inst: createInstance(bytes, kernels, opts), kernels };
}

/**
 * Greedy decoding straight through the Transformer (one sequence, one token per step after the
 * prompt), keeping every step's logits so a mismatch can be explained.
 */
export function greedyWithLogits(
  inst: ModelInstance,
  promptIds: readonly number[],
  maxNewTokens: number,
  eosId: number,
): { ids: number[]; logits: Float32Array[] } {
  const t = inst.transformer;
  const table = Array.from(
    { length: Math.ceil(t.shape.maxModelLen / t.shape.blockSize) },
    (_, i) => i,
  );
  const toks = [...promptIds];
  const ids: number[] = [];
  const logits: Float32Array[] = [];
  let pos = 0;
  let feed = [...promptIds];
  for (let i = 0; i < maxNewTokens; i++) {
    const out = t.forward({
      numTokens: feed.length,
      tokenIds: feed,
      positions: feed.map((_, j) => pos + j),
      seqIndex: feed.map(() => 0),
      blockTables: [table],
      logitRows: [feed.length - 1],
    });
    pos += feed.length;
    logits.push(Float32Array.from(out));
    const next = argmax(out, 0, t.config.vocabSize);
    ids.push(next);
    toks.push(next);
    if (next === eosId) break;
    feed = [next];
  }
  return { ids, logits };
}
