/**
 * The JobExecutor's view of its instances' load, pushed rather than pulled: every task report
 * from an Npu carries the instance's engine stats, and the JobExecutor adds the work it placed
 * since (a task's estimate is dropped once a report about that task arrives, since the snapshot
 * then includes it). Placing a request therefore costs no RPC per instance. An instance that has
 * not reported yet counts as idle. With several JobExecutor shards each sees the reports of its
 * own requests. Pure.
 */
import type { EngineStats } from "../engine/engine.ts";

export interface InstanceLoad {
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numOutstandingTokens: number;
}

const IDLE: InstanceLoad = {
  numRunning: 0,
  numWaiting: 0,
  numFreeBlocks: 0,
  numOutstandingTokens: 0,
};

/** An estimate no report has covered after this long is dropped (its task never reported). */
export const ESTIMATE_TTL_MS = 5 * 60_000;

interface Estimate {
  numSeqs: number;
  numTokens: number;
}

export class LoadTable {
  private readonly reported = new Map<string, InstanceLoad>();
  /** Work placed but not yet seen in a report: taskId -> its instance and estimate. */
  private readonly pending = new Map<string, Estimate & { instanceId: string; at: number }>();
  /** Per instance, the sum of its pending estimates. */
  private readonly extra = new Map<string, Estimate>();

  /**
   * A task was placed on `instanceId` at `now`: `numSeqs` sequences owing about `numTokens`
   * tokens. Estimates older than ESTIMATE_TTL_MS are dropped first.
   */
  placed(
    taskId: string,
    instanceId: string,
    numSeqs: number,
    numTokens: number,
    now: number,
  ): void {
    for (const [id, p] of this.pending) {
      if (now - p.at < ESTIMATE_TTL_MS) break; // insertion order: the oldest come first
      this.forget(id);
    }
    this.forget(taskId);
    this.pending.set(taskId, { instanceId, numSeqs, numTokens, at: now });
    const e = this.extra.get(instanceId) ?? { numSeqs: 0, numTokens: 0 };
    this.extra.set(instanceId, {
      numSeqs: e.numSeqs + numSeqs,
      numTokens: e.numTokens + numTokens,
    });
  }

  /** A report about `taskId` from `instanceId`, with the instance's stats at that moment. */
  report(taskId: string, instanceId: string, stats: EngineStats | undefined): void {
    this.forget(taskId);
    if (!stats) return;
    this.reported.set(instanceId, {
      numRunning: stats.numRunning,
      numWaiting: stats.numWaiting,
      numFreeBlocks: stats.numFreeBlocks,
      numOutstandingTokens: stats.numOutstandingTokens,
    });
  }

  /** Drops a task's estimate (it was reported, or never reached its instance). */
  forget(taskId: string): void {
    const p = this.pending.get(taskId);
    if (!p) return;
    this.pending.delete(taskId);
    const e = this.extra.get(p.instanceId);
    if (!e) return;
    const left = { numSeqs: e.numSeqs - p.numSeqs, numTokens: e.numTokens - p.numTokens };
    if (left.numSeqs <= 0) this.extra.delete(p.instanceId);
    else this.extra.set(p.instanceId, left);
  }

  /** The instance's last report plus the work placed on it since. O(1). */
  load(instanceId: string): InstanceLoad {
    const base = this.reported.get(instanceId) ?? IDLE;
    const e = this.extra.get(instanceId);
    if (!e) return base;
    return {
      ...base,
      numWaiting: base.numWaiting + e.numSeqs,
      numOutstandingTokens: base.numOutstandingTokens + e.numTokens,
    };
  }
}
