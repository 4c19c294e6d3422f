/**
 * The scheduler's side of a sparse KV-cache policy: pages opened and evicted before a step,
 * scores applied after it, what may enter the prefix cache, and the usage report. Pure.
 */
import type { KvBlockManager } from "../kv-block-manager.ts";
import type { Sequence } from "../sequence.ts";
import type { KvPolicyName } from "./spec.ts";
import { applyScores, evictOverBudget, openPages, resetKvPages } from "./state.ts";

/** `usage.kv_cache` of a finished sequence. */
export interface KvUsage {
  policy: KvPolicyName;
  budget: number;
  resident_pages: number;
  evictions: number;
  peak_kv_bytes: number;
}

/**
 * Before a step that computes positions up to `numTokens`: registers the pages those positions
 * open and, when `decoding`, evicts pages over the budget (their blocks freed by reference).
 * Returns the key shift (tokens evicted), to subtract from `numTokens` when growing the table.
 */
export function prepareKv(
  seq: Sequence,
  blocks: KvBlockManager,
  numTokens: number,
  decoding: boolean,
): number {
  const kv = seq.kv;
  if (!kv) return 0;
  openPages(kv, numTokens);
  if (decoding && seq.numComputedTokens >= seq.numPromptTokens) {
    evictOverBudget(kv, seq.blockTable, (ids) => blocks.free(ids));
  }
  const shift = kv.evictedBlocks * blocks.blockSize;
  kv.peakBlocks = Math.max(kv.peakBlocks, blocks.blocksFor(numTokens - shift));
  return shift;
}

/** The blocks' KV were all freed (preemption): the recompute rebuilds the pages. */
export function resetKv(seq: Sequence): void {
  if (seq.kv) resetKvPages(seq.kv);
}

/** Applies a decode step's per-block scores, the step's position being `position`. */
export function applyKvScores(seq: Sequence, scores: ArrayLike<number>, position: number): void {
  if (seq.kv) applyScores(seq.kv, scores, position);
}

/**
 * Tokens of `seq` whose full blocks may enter the prefix cache: all computed ones when dense;
 * under a sparse policy only the prompt's, computed by dense prefill, and nothing once a block
 * was evicted (the table no longer maps positions one to one). Decode blocks of a sparse
 * sequence come from sparse attention and never enter the cache.
 */
export function commitLimit(seq: Sequence): number {
  if (!seq.kv) return seq.numComputedTokens;
  if (seq.kv.evictedBlocks > 0) return 0;
  return Math.min(seq.numComputedTokens, seq.numPromptTokens);
}

/** The usage report of a sequence's policy (null when dense). */
export function kvUsage(seq: Sequence, bytesPerBlock: number): KvUsage | null {
  const kv = seq.kv;
  if (!kv) return null;
  return {
    policy: kv.spec.policy,
    budget: kv.spec.budget,
    resident_pages: kv.pages.length,
    evictions: kv.evictions,
    peak_kv_bytes: kv.peakBlocks * bytesPerBlock,
  };
}
