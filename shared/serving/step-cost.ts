/**
 * What an engine step costs, counted from the work it did, and the budget of one engine-loop
 * invocation. Deployed Workers advance `Date.now()` only on I/O, so a slice measured by the
 * clock does not bound the CPU a loop of pure compute uses; the loop counts each step's
 * estimated CPU time instead (and the clock too, where it moves):
 *
 *   estimatedMs = STEP_OVERHEAD_MS + TOKEN_OVERHEAD_MS * scheduledTokens + flop / FLOP_PER_MS
 *
 * where flop counts the step's matmuls from the model's shape: per computed token the attention
 * projections and the FFN of the experts it uses, per sampled token the LM head, and per
 * attended (query, key) pair the scores and the weighted values. The constants are measured on
 * this engine (`npm run -s bench:step-cost`, which prints how the estimate compares with the
 * measured step time for each reference model) and chosen so the estimate is not below the
 * measured time. Pure.
 */
import type { ModelConfig } from "../model/config.ts";

/** The work of one step, as the engine reports it (StepReport). */
export interface StepWork {
  numScheduledTokens: number;
  numSampled: number;
  /** Attention (query, key) pairs computed (`attendedPairs` of engine/executor.ts, summed). */
  numAttendedPairs: number;
}

/** Fixed cost of a step (planning, the forward's set-up, outputs), in ms. */
export const STEP_OVERHEAD_MS = 0.05;
/** Cost per computed token beyond its matmuls (norms, RoPE, routing, sampling), in ms. */
export const TOKEN_OVERHEAD_MS = 0.02;
/** The matmul rate the estimate assumes, in FLOP per ms (wasm SIMD kernels, one core). */
export const FLOP_PER_MS = 2e6;

/** Multiply-adds of one step's matmuls, as FLOP (2 per multiply-add). */
export function stepFlop(c: ModelConfig, w: StepWork): number {
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const projections = c.hiddenSize * (qDim + 2 * kvDim) + qDim * c.hiddenSize;
  const ffn =
    c.numExperts > 0
      ? c.numExpertsPerTok * 3 * c.hiddenSize * c.moeIntermediateSize + c.hiddenSize * c.numExperts
      : 3 * c.hiddenSize * c.intermediateSize;
  const perToken = c.numHiddenLayers * (projections + ffn);
  // scores (q . k) and the weighted sum of values: qDim each per pair and layer
  const perPair = c.numHiddenLayers * 2 * qDim;
  const head = c.hiddenSize * c.vocabSize;
  return 2 * (perToken * w.numScheduledTokens + perPair * w.numAttendedPairs + head * w.numSampled);
}

/** A step's estimated CPU time in ms. */
export function estimatedStepMs(c: ModelConfig, w: StepWork): number {
  return STEP_OVERHEAD_MS + TOKEN_OVERHEAD_MS * w.numScheduledTokens + stepFlop(c, w) / FLOP_PER_MS;
}

/**
 * One invocation's budget: spent by each step's estimated CPU time and, separately, by its wall
 * time; used up when either reaches `budgetMs` (locally the clock moves and catches a machine
 * slower than the estimate; deployed, the estimate alone bounds the CPU).
 */
export class SliceBudget {
  #estimatedMs = 0;
  #wallMs = 0;

  constructor(readonly budgetMs: number) {}

  spend(estimatedMs: number, wallMs: number): void {
    this.#estimatedMs += estimatedMs;
    this.#wallMs += wallMs;
  }

  get usedUp(): boolean {
    return this.#estimatedMs >= this.budgetMs || this.#wallMs >= this.budgetMs;
  }

  /** Which count used it up (the estimate, when both did), or null. */
  get usedUpBy(): "work" | "clock" | null {
    if (this.#estimatedMs >= this.budgetMs) return "work";
    return this.#wallMs >= this.budgetMs ? "clock" : null;
  }
}
