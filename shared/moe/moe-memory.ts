/**
 * Memory of a moe-attention instance's expert ranks, so a model too large for one NPU can be
 * accepted when its experts spread over enough Expert DOs. Every MoE layer holds the same
 * experts on a rank (the primary map), and every layer of a MoE model is MoE. Pure.
 */

import type { GgufFile } from "../gguf/gguf.ts";
import type { ModelConfig } from "../model/config.ts";
import { expertWorkspaceBytes } from "../model/moe-split.ts";
import { expertBytes } from "../model/weights.ts";

/**
 * Bytes an expert rank holding `numHeld` experts of every layer takes: weights (in the types
 * the file stores them) and scratch.
 */
export function expertRankBytes(
  file: GgufFile,
  c: ModelConfig,
  numHeld: number,
  numAttention: number,
  maxTokensPerRank: number,
): number {
  const perExpert = expertBytes(file, c);
  const maxRows = numAttention * maxTokensPerRank;
  const maxPairs = maxRows * c.numExpertsPerTok;
  const scratch =
    expertWorkspaceBytes(c, maxRows, maxPairs) + 4 * (maxRows + maxPairs) * c.hiddenSize + 32;
  return numHeld * perExpert + scratch;
}

/**
 * The fewest expert ranks (at most one per expert) whose fullest rank fits `budgetBytes` with
 * `numAttention` attention ranks, or null when even one expert per rank does not fit.
 */
export function minExpertRanks(
  file: GgufFile,
  c: ModelConfig,
  budgetBytes: number,
  numAttention: number,
  maxTokensPerRank: number,
): number | null {
  for (let e = 1; e <= c.numExperts; e++) {
    const held = Math.ceil(c.numExperts / e);
    if (expertRankBytes(file, c, held, numAttention, maxTokensPerRank) <= budgetBytes) return e;
  }
  return null;
}
