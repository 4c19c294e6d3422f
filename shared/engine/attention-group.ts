/**
 * The attention ranks (DP group) of one moe-attention instance, stepped in lockstep: every group
 * step, every rank runs one engine step (or, with nothing to run, an idle step of empty parts),
 * so each expert rank hears from every attention rank for every (layer, step). Decode DP
 * balancing: a new sequence goes to the rank that is not full and has the lowest KV use
 * (xDeepServe 5.5). Pure apart from the engines' executors.
 */
import type { DisaggMoe } from "./disagg-executor.ts";
import type { Engine, StepReport } from "./engine.ts";

export interface AttentionRank {
  engine: Engine;
  moe: DisaggMoe;
}

/** KV blocks in use over all blocks. */
export function kvUse(engine: Engine): number {
  const s = engine.stats();
  return s.numBlocks === 0 ? 1 : (s.numBlocks - s.numFreeBlocks) / s.numBlocks;
}

/**
 * The rank a new sequence of `numTokens` tokens goes to: among the ranks with room for it, the
 * lowest KV use, then the fewest sequences, then the lowest index; null when every rank is full.
 */
export function pickAttentionRank(engines: readonly Engine[], numTokens: number): number | null {
  let best: number | null = null;
  let bestKey: [number, number] = [Number.POSITIVE_INFINITY, Number.POSITIVE_INFINITY];
  engines.forEach((e, i) => {
    if (!e.hasRoomFor(numTokens)) return;
    const s = e.stats();
    const key: [number, number] = [kvUse(e), s.numRunning + s.numWaiting];
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
      this.ranks.map((r) => r.engine),
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
