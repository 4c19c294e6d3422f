/**
 * Memory of a moe-attention instance's expert ranks, so a model too large for one NPU can be
 * accepted when its experts spread over enough Expert DOs. Every MoE layer holds the same
 * experts on a rank (the primary map), and every layer of a MoE model is MoE. Pure.
 */
import type { ModelConfig } from "../model/config.ts";
import { expertWorkspaceBytes } from "../model/moe-split.ts";

/** Bytes an expert rank holding `numHeld` experts of every layer takes: weights and scratch. */
export function expertRankBytes(
  c: ModelConfig,
  numHeld: number,
  numAttention: number,
  maxTokensPerRank: number,
): number {
  const perExpert = 4 * 3 * c.moeIntermediateSize * c.hiddenSize + 32;
  const maxRows = numAttention * maxTokensPerRank;
  const maxPairs = maxRows * c.numExpertsPerTok;
  const scratch =
    expertWorkspaceBytes(c, maxRows, maxPairs) + 4 * (maxRows + maxPairs) * c.hiddenSize + 32;
  return numHeld * c.numHiddenLayers * perExpert + scratch;
}

/**
 * The fewest expert ranks (at most one per expert) whose fullest rank fits `budgetBytes` with
 * `numAttention` attention ranks, or null when even one expert per rank does not fit.
 */
export function minExpertRanks(
  c: ModelConfig,
  budgetBytes: number,
  numAttention: number,
  maxTokensPerRank: number,
): number | null {
  for (let e = 1; e <= c.numExperts; e++) {
    const held = Math.ceil(c.numExperts / e);
    if (expertRankBytes(c, held, numAttention, maxTokensPerRank) <= budgetBytes) return e;
  }
  return null;
}
