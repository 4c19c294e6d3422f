/**
 * The scheduler's recent decisions, for the dashboard: a JobExecutor keeps a ring buffer of short
 * summaries (no tenant, no prompt), and GET /api/scheduler/decisions merges the shards'. Pure.
 */
import type { ScheduleDecision } from "./scheduling.ts";

/** How many decisions a shard keeps. */
export const MAX_DECISIONS = 50;

export interface DecisionSummary {
  requestId: string;
  /** When it was decided (epoch ms). */
  at: number;
  model: string;
  deploymentId: string;
  /** The colocated or prefill instance. */
  instanceId: string;
  /** PD only. */
  decodeInstanceId: string | null;
  /** How the instance was chosen (`context-cache` when the request was pinned to one). */
  reason: string;
  groupReason: string | null;
  balanced: boolean | null;
  /** The candidates' loads and prefix matches. */
  scores: { instanceId: string; load: number; numMatchedBlocks: number }[];
}

/** A decision's summary; `decision` null means the job was pinned to a context cache's instance. */
export function summarizeDecision(
  requestId: string,
  at: number,
  model: string,
  decision: ScheduleDecision | null,
  pinned: { deploymentId: string; instanceId: string } | null,
): DecisionSummary | null {
  if (!decision) {
    if (!pinned) return null;
    return {
      requestId,
      at,
      model,
      deploymentId: pinned.deploymentId,
      instanceId: pinned.instanceId,
      decodeInstanceId: null,
      reason: "context-cache",
      groupReason: null,
      balanced: null,
      scores: [],
    };
  }
  return {
    requestId,
    at,
    model,
    deploymentId: decision.deploymentId,
    instanceId: decision.instanceId ?? decision.prefillInstanceId ?? "",
    decodeInstanceId: decision.decodeInstanceId,
    reason: decision.reason,
    groupReason: decision.groupReason,
    balanced: decision.balanced,
    scores: decision.scores.map((s) => ({
      instanceId: s.instanceId,
      load: s.load,
      numMatchedBlocks: s.numMatchedBlocks,
    })),
  };
}

/** The last `capacity` decisions, oldest first. Not persisted: a restarted shard starts empty. */
export class DecisionLog {
  readonly #items: DecisionSummary[] = [];
  constructor(readonly capacity = MAX_DECISIONS) {}

  record(d: DecisionSummary): void {
    this.#items.push(d);
    if (this.#items.length > this.capacity)
      this.#items.splice(0, this.#items.length - this.capacity);
  }

  /** The newest `limit` decisions, newest first. */
  recent(limit = this.capacity): DecisionSummary[] {
    return this.#items.slice(-limit).reverse();
  }
}

/** Every shard's decisions, newest first, at most `limit`. */
export function mergeDecisions(
  shards: readonly (readonly DecisionSummary[])[],
  limit = MAX_DECISIONS,
): DecisionSummary[] {
  return shards
    .flat()
    .sort((a, b) => b.at - a.at)
    .slice(0, limit);
}
