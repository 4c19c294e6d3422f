/**
 * The attention ranks (DP group) of one moe-attention instance, stepped in lockstep: every group
 * step, every rank runs one engine step (or, with nothing to run, an idle step of empty parts),
 * so each expert rank hears from every attention rank for every (layer, step). Decode DP
 * balancing: a new sequence goes to the rank that is not full and has the lowest KV use
 * (xDeepServe 5.5). LeaderLedger: the leader's book of the other ranks when each rank is its own
 * Npu DO. Pure apart from the engines' executors.
 */

import type { Engine, StepReport } from "../engine/engine.ts";
import type { DisaggMoe } from "./disagg-executor.ts";
import type { ExpertMap } from "./expert-map.ts";
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

/** What a non-leader rank answers its part of a group step with. */
export interface RankStepAnswer {
  hasWork: boolean;
  load: AttentionLoad | null;
}

/**
 * The leader's (rank 0's) book of the other attention ranks of a DO-hosted group: which reported
 * work, their loads as last reported plus the sequences routed there since, and the expert map
 * version each was last sent. Pure.
 */
export class LeaderLedger {
  /** Ranks 1..numAttention-1. */
  readonly others: readonly number[];
  readonly #busy = new Set<number>();
  readonly #loads = new Map<number, AttentionLoad>();
  readonly #sentVersion = new Map<number, number>();

  constructor(readonly numAttention: number) {
    this.others = Array.from({ length: numAttention - 1 }, (_, i) => i + 1);
  }

  /** Rank `rank` reported work. */
  markBusy(rank: number): void {
    this.#busy.add(rank);
  }

  anyBusy(): boolean {
    return this.#busy.size > 0;
  }

  /** A group step starts: kicks that arrive during it add ranks back, so none is lost. */
  clearBusy(): void {
    this.#busy.clear();
  }

  /** `map` when rank `rank` was not yet sent its version (recorded as sent), else null. */
  mapFor(rank: number, map: ExpertMap): ExpertMap | null {
    const send = this.#sentVersion.get(rank) !== map.version ? map : null;
    this.#sentVersion.set(rank, map.version);
    return send;
  }

  /** Rank `rank` switched to `version` (a failover broadcast reached it). */
  sent(rank: number, version: number): void {
    this.#sentVersion.set(rank, version);
  }

  /** Records a rank's answer to a group step; null: it failed (its map is resent next time). */
  settle(rank: number, answer: RankStepAnswer | null): void {
    if (!answer) {
      this.#sentVersion.delete(rank);
      return;
    }
    if (answer.hasWork) this.#busy.add(rank);
    if (answer.load) this.#loads.set(rank, answer.load);
  }

  /**
   * The rank a new task's `numTokens` sequences go to (pickAttentionRank over the leader's `own`
   * load and the others' as booked; a rank that never reported counts as idle), booked as placed
   * there until it reports. 0 when the group has one rank or every rank is full.
   */
  route(own: AttentionLoad, numTokens: number): number {
    if (this.numAttention === 1) return 0;
    const idle = { ...own, numRunning: 0, numWaiting: 0, numFreeBlocks: own.numBlocks };
    const loads = [own, ...this.others.map((a) => this.#loads.get(a) ?? idle)];
    const rank = pickAttentionRank(loads, numTokens) ?? 0;
    if (rank !== 0) this.#loads.set(rank, withPlaced(loads[rank] as AttentionLoad, numTokens));
    return rank;
  }
}
