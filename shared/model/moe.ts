/**
 * MoE gating: softmax over all experts, top-k, renormalise the k weights to sum to 1
 * (Mixtral and Qwen3-MoE with norm_topk_prob). Pure; no allocation.
 */
import { softmax } from "./ops.ts";

/**
 * Routes one token. `logits` (numExperts) at `off` is overwritten with probabilities.
 * Writes the chosen expert ids in descending probability order (ties: lower id first) to
 * ids[outOff..outOff+topK) and their renormalised weights to weights[outOff..).
 */
export function routeTopK(
  logits: Float32Array,
  off: number,
  numExperts: number,
  topK: number,
  ids: Int32Array,
  weights: Float32Array,
  outOff: number,
): void {
  softmax(logits, off, numExperts);
  let sum = 0;
  for (let s = 0; s < topK; s++) {
    let best = -1;
    let bestP = Number.NEGATIVE_INFINITY;
    for (let e = 0; e < numExperts; e++) {
      const p = logits[off + e] as number;
      if (p > bestP && !chosen(ids, outOff, s, e)) {
        best = e;
        bestP = p;
      }
    }
    ids[outOff + s] = best;
    weights[outOff + s] = bestP;
    sum += bestP;
  }
  for (let s = 0; s < topK; s++) weights[outOff + s] = (weights[outOff + s] as number) / sum;
}

function chosen(ids: Int32Array, off: number, n: number, e: number): boolean {
  for (let i = 0; i < n; i++) if (ids[off + i] === e) return true;
  return false;
}
