/**
 * The attention leader's (rank 0's) book of the other ranks when each attention rank is its own
 * Npu (attention-rank.ts): which reported work, their DP loads, and the expert map version each
 * was sent. Pure: no Workers API.
 */
import {
  type AttentionLoad,
  pickAttentionRank,
  withPlaced,
} from "../shared/moe/attention-group.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";

/** What a non-leader rank answers its part of a group step with. */
export interface RankStepAnswer {
  hasWork: boolean;
  load: AttentionLoad | null;
}

/**
 * The leader's book of the other attention ranks: which reported work, their loads as last
 * reported plus the sequences routed there since, and the expert map version each was last sent.
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
