/**
 * The step protocol between the scheduler (policy) and an executor (maths, local or remote).
 * Plain data only: a plan can cross RPC unchanged. Pure types.
 */
import type { KvScoreAggregate, KvScoreMode } from "../model/page-scorer.ts";
import type { SampledToken, SamplerParams } from "../model/sampler.ts";
import type { BlockTable } from "./kv-block-manager.ts";
import type { SeqId } from "./sequence.ts";

export interface ScheduledSeq {
  seqId: SeqId;
  /** Tokens to compute this step (a prefill chunk, or one decode token). */
  tokenIds: number[];
  /** Position of tokenIds[0]. */
  startPos: number;
  blockTable: BlockTable;
  /** True when this chunk reaches the end of the sequence, so a token is sampled. */
  sample: boolean;
  sampler: SamplerParams;
  choiceIndex: number;
  /** A sequence under a sparse KV-cache policy (absent: dense). */
  kv?: ScheduledKv;
}

/** What the forward needs to know of a sparse sequence (kv-policy/state.ts). */
export interface ScheduledKv {
  /** Tokens evicted before the resident blocks of the table (a multiple of the block size). */
  keyShift: number;
  /** Scores to return for this (decode) chunk, and Quest's pages attended per layer (0: all). */
  mode: KvScoreMode;
  selectPages: number;
  blocksPerPage: number;
  aggregate: KvScoreAggregate;
}

export interface StepPlan {
  stepIndex: number;
  seqs: ScheduledSeq[];
  numScheduledTokens: number;
  /** Sequences preempted (blocks freed, to be recomputed) while planning this step. */
  preemptedSeqIds: SeqId[];
}

export interface StepResult {
  /** Aligned with plan.seqs: the sampled token, or null for a chunk that does not sample. */
  sampled: (SampledToken | null)[];
  /** Aligned with plan.seqs: per resident block, the step's page scores (mode "bound"/"probs"). */
  kvScores?: (number[] | null)[];
}

/** Attention pairs of a chunk of `n` tokens starting at position `start` (causal). */
export function attendedPairs(start: number, n: number): number {
  return n * start + (n * (n + 1)) / 2;
}

export interface Executor {
  execute(plan: StepPlan): Promise<StepResult>;
}
