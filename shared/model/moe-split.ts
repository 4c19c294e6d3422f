/**
 * The seam between a MoE layer's two halves. The attention half (attention, the FFN norm, the
 * router and top-k) stays with the sequences and their KV; the expert half (each chosen expert's
 * SwiGLU FFN on the rows routed to it) can run in the same Transformer (`LocalMoe` behaviour, the
 * default) or on other ranks (shared/moe/disagg-executor.ts). Either way the expert half fills
 * one output row per (token row, top-k slot), and the attention half combines them with the
 * routing weights in slot order, so outputs are bit-identical wherever the experts ran.
 *
 * `runExperts` is the one expert computation, used by the local path and by expert ranks: pairs
 * are grouped by expert and each expert runs one matmul (linear.ts: whatever the weights' type)
 * over its rows. Pure; no allocation.
 */
import type { ModelConfig } from "./config.ts";
import type { Kernels } from "./kernels.ts";
import { applyLinear } from "./linear.ts";
import { maxActRowBytes } from "./quant.ts";
import type { Matrix } from "./weights.ts";

/**
 * One expert's weights, in their kernel-memory types (weights.ts): gate rows then up rows
 * (2 ff, h), and down (h, ff).
 */
export interface ExpertWeights {
  gateUp: Matrix;
  down: Matrix;
}

/** What the attention half hands to the expert half for one MoE layer. Views; valid for the call. */
export interface MoeBatch {
  layer: number;
  numTokens: number;
  /** Normed hidden rows (numTokens, hiddenSize). */
  hidden: Float32Array;
  /** Chosen expert per (row, slot): (numTokens * topK), slots in descending weight order. */
  routeIds: Int32Array;
}

/**
 * Runs the expert half of a MoE layer: writes expert `routeIds[r*k+s]`'s output for row r into
 * slotOut[(r*k+s)*h ..). The local Transformer does it in-process; a disaggregated executor
 * dispatches rows to the ranks holding the experts and receives the outputs back.
 */
export interface MoeExecutor {
  experts(batch: MoeBatch, slotOut: Float32Array): Promise<void>;
}

/**
 * Scratch for `runExperts`, in kernel memory (every buffer a kernel touches must be). An expert
 * sees each input row at most once, so one expert's buffers hold `maxRows` rows.
 */
export interface ExpertWorkspace {
  /** (maxRows, h): rows gathered for one expert. */
  gathered: Float32Array;
  /** (maxRows, 2 ff) and (maxRows, ff). */
  hb: Float32Array;
  hb2: Float32Array;
  /** (maxRows, h). */
  expertOut: Float32Array;
  /** (maxPairs + numExperts): pair indices bucketed by expert, then per-expert running starts. */
  order: Int32Array;
  /** (numExperts). */
  counts: Int32Array;
  /** Quantised activation rows for matmulQ: maxRows rows of max(h, ff) values. */
  act: Uint8Array;
}

export function allocExpertWorkspace(
  kernels: Kernels,
  c: ModelConfig,
  maxRows: number,
  maxPairs: number,
): ExpertWorkspace {
  const h = c.hiddenSize;
  const ff = c.moeIntermediateSize;
  return {
    gathered: kernels.alloc(maxRows * h),
    hb: kernels.alloc(maxRows * 2 * ff),
    hb2: kernels.alloc(maxRows * ff),
    expertOut: kernels.alloc(maxRows * h),
    order: kernels.allocInt32(maxPairs + c.numExperts),
    counts: kernels.allocInt32(c.numExperts),
    act: kernels.allocBytes(maxRows * maxActRowBytes(Math.max(h, ff))),
  };
}

/** Bytes of `allocExpertWorkspace` (with allocation rounding). */
export function expertWorkspaceBytes(c: ModelConfig, maxRows: number, maxPairs: number): number {
  const h = c.hiddenSize;
  const ff = c.moeIntermediateSize;
  const floats = maxRows * (2 * h + 3 * ff);
  const act = maxRows * maxActRowBytes(Math.max(h, ff));
  return 4 * (floats + maxPairs + 2 * c.numExperts) + act + 16 * 7;
}

/**
 * For each of `numPairs` pairs p: out[p] = FFN_{expert[p]}(input[row[p]]). Pairs are bucketed
 * by expert (stable: in pair order), each expert's rows gathered and run through one matmul
 * chain. `weightsOf(e)` gives expert e's weights (the caller holds them).
 */
export function runExperts(
  kernels: Kernels,
  ws: ExpertWorkspace,
  c: ModelConfig,
  input: Float32Array,
  row: ArrayLike<number>,
  expert: ArrayLike<number>,
  numPairs: number,
  weightsOf: (e: number) => ExpertWeights,
  out: Float32Array,
): void {
  const h = c.hiddenSize;
  const E = c.numExperts;
  const ff = c.moeIntermediateSize;
  const counts = ws.counts;
  counts.fill(0);
  for (let p = 0; p < numPairs; p++) counts[expert[p] as number]++;
  const starts = ws.order.subarray(numPairs);
  let acc = 0;
  for (let e = 0; e < E; e++) {
    starts[e] = acc;
    acc += counts[e] as number;
  }
  for (let p = 0; p < numPairs; p++) {
    const e = expert[p] as number;
    ws.order[starts[e] as number] = p;
    starts[e]++;
  }
  let begin = 0;
  for (let e = 0; e < E; e++) {
    const m = counts[e] as number;
    if (m === 0) continue;
    for (let j = 0; j < m; j++) {
      const r = row[ws.order[begin + j] as number] as number;
      ws.gathered.set(input.subarray(r * h, (r + 1) * h), j * h);
    }
    const w = weightsOf(e);
    applyLinear(kernels, ws.hb, ws.gathered, w.gateUp, m, h, ws.act);
    kernels.swiglu(ws.hb2, ws.hb, m, ff);
    applyLinear(kernels, ws.expertOut, ws.hb2, w.down, m, ff, ws.act);
    for (let j = 0; j < m; j++) {
      const p = ws.order[begin + j] as number;
      out.set(ws.expertOut.subarray(j * h, (j + 1) * h), p * h);
    }
    begin += m;
  }
}
