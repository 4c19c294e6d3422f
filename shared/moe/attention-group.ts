/**
 * The attention ranks (DP group) of one moe-attention instance, stepped in lockstep: every group
 * step, every rank runs one engine step (or, with nothing to run, an idle step of empty parts),
 * so each expert rank hears from every attention rank for every (layer, step). Decode DP
 * balancing: a new sequence goes to the rank that is not full and has the lowest KV use
 * (xDeepServe 5.5). Pure apart from the engines' executors.
 */

import type { Engine, StepReport } from "../engine/engine.ts";
import type { DisaggMoe } from "./disagg-executor.ts";
import type { PingPongMoe } from "./ping-pong.ts";

export interface AttentionRank {
  engine: Engine;
  /** One DisaggMoe, or two ping-ponging micro-batches' (ping-pong.ts). */
  moe: DisaggMoe | PingPongMoe;
}

/** What DP balancing reads of an attention rank (sent to rank 0 after each step in the DOs). */
export interface AttentionLoad {
  numRunning: number;
  numWaiting: number;
  maxNumSeqs: number;
  numFreeBlocks: number;
  numBlocks: number;
  blockSize: number;
}

export function attentionLoad(engine: Engine): AttentionLoad {
  const s = engine.stats();
  return {
    numRunning: s.numRunning,
    numWaiting: s.numWaiting,
    maxNumSeqs: engine.scheduler.config.maxNumSeqs,
    numFreeBlocks: s.numFreeBlocks,
    numBlocks: s.numBlocks,
    blockSize: engine.blockSize,
  };
}

/** Counts a sequence of `numTokens` tokens sent to a rank before it reports again. */
export function withPlaced(l: AttentionLoad, numTokens: number): AttentionLoad {
  return {
    ...l,
    numWaiting: l.numWaiting + 1,
    numFreeBlocks: Math.max(0, l.numFreeBlocks - Math.ceil(numTokens / l.blockSize)),
  };
}

/**
 * The rank a new sequence of `numTokens` tokens (prompt and output) goes to: among the ranks not
 * full (a sequence slot, blocks for all its tokens), the lowest KV use, then the fewest
 * sequences, then the lowest index; null when every rank is full.
 */
export function pickAttentionRank(
  loads: readonly AttentionLoad[],
  numTokens: number,
): number | null {
  let best: number | null = null;
  let bestKey: [number, number] = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
  loads.forEach((l, i) => {
    const seqs = l.numRunning + l.numWaiting;
    if (seqs >= l.maxNumSeqs || l.numFreeBlocks < Math.ceil(numTokens / l.blockSize)) return;
    const kvUse = l.numBlocks === 0 ? 1 : (l.numBlocks - l.numFreeBlocks) / l.numBlocks;
    const key: [number, number] = [kvUse, seqs];
    if (key[0] < bestKey[0] || (key[0] === bestKey[0] && key[1] < bestKey[1])) {
      best = i;
      bestKey = key;
    }
  });
  return best;
}

export class AttentionGroup {
  constructor(readonly ranks: readonly AttentionRank[]) {}

  hasWork(): boolean {
    return this.ranks.some((r) => r.engine.hasWork());
  }

  pick(numTokens: number): number | null {
    return pickAttentionRank(
      this.ranks.map((r) => attentionLoad(r.engine)),
      numTokens,
    );
  }

  /**
   * One group step: each rank's engine step, in parallel (ranks without work send empty parts).
   * A failed exchange (an expert rank's timeout) rejects, after every rank has left the step.
   */
  async step(): Promise<(StepReport | null)[]> {
    const results = await Promise.allSettled(
      this.ranks.map(async (r) => {
        try {
          r.moe.beginStep();
          const report = r.engine.hasWork() ? await r.engine.step() : null;
          await r.moe.endStep();
          return report;
        } catch (e) {
          r.moe.abortStep();
          throw e;
        }
      }),
    );
    const failed = results.find((x) => x.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return results.map((x) => (x as PromiseFulfilledResult<StepReport | null>).value);
  }
}
