/**
 * Expert-rank failover for a moe-attention instance, run by attention rank 0 (xDeepServe 6.4 and
 * 7.2 with one-step replay). While a group step is in flight it probes every live Expert DO every
 * `probeMs` (shared/serving/expert-watch.ts decides: reset, failed, hung, unreachable). A failed
 * rank is taken out: the next expert map (shared/serving/expert-failover.ts) keeps its experts'
 * surviving EPLB replicas and re-places the ones it held alone on surviving ranks, which load
 * them first (by R2 range reads, as at setup); then every attention rank switches to the map and
 * replays only the (layer, step) exchanges that waited on the failed rank. When no rank survives
 * or a load fails, every attention rank's exchanges fail with one clear error instead (the
 * affected tasks fail; request migration may re-run them on another instance).
 */

import { errorFields, type Logger } from "../shared/log.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";
import { liveRanks } from "../shared/moe/expert-map.ts";
import type { MoeGroupSpec } from "../shared/protocol/moe.ts";
import { expertName } from "../shared/protocol/names.ts";
import { failoverMap } from "../shared/serving/expert-failover.ts";
import {
  DEFAULT_EXPERT_WATCH,
  type ExpertObservation,
  ExpertWatch,
} from "../shared/serving/expert-watch.ts";
import type { Env } from "./env.ts";

/** One failover, as GET /api/deployments/:id/experts shows it. */
export interface FailoverEvent {
  rank: number;
  reason: string;
  /** When the watch decided (epoch ms), and when every attention rank had the new map. */
  detectedAt: number;
  recoveredAt: number | null;
  fromVersion: number;
  toVersion: number | null;
  /** (layer, expert) pairs now served by a surviving replica alone, or re-loaded elsewhere. */
  numReplicated: number;
  numReloaded: number;
  /** Why the failover could not happen (the group's exchanges fail with it), or null. */
  error: string | null;
}

export interface FailoverHost {
  env: Env;
  log: Logger;
  spec: MoeGroupSpec;
  /** Every attention rank (this one included) switches to `map`, or fails with `error`. */
  broadcast(change: { map: ExpertMap } | { error: string }): Promise<void>;
}

/** A health call slower than this counts as no answer for that round. */
const HEALTH_TIMEOUT_MS = 1_000;

export class ExpertFailover {
  readonly events: FailoverEvent[] = [];
  private readonly watch: ExpertWatch;
  /** The running probe round or failover (one at a time). */
  private busy: Promise<void> | null = null;

  constructor(private readonly host: FailoverHost) {
    this.watch = new ExpertWatch(host.spec.watch ?? DEFAULT_EXPERT_WATCH);
  }

  private expert(j: number) {
    return this.host.env.EXPERT.getByName(expertName(this.host.spec.instanceId, j));
  }

  /** Probes the expert ranks every probeMs until `step` settles; returns `step`. */
  async during<T>(step: Promise<T>): Promise<T> {
    let settled = false;
    let timer: ReturnType<typeof setTimeout> | null = null;
    const tick = () => {
      timer = setTimeout(() => {
        if (settled) return;
        this.busy ??= this.round()
          .catch((e: unknown) => this.host.log.error("moe.watch_failed", errorFields(e)))
          .finally(() => {
            this.busy = null;
          });
        tick();
      }, this.watch.opts.probeMs);
    };
    tick();
    try {
      return await step;
    } finally {
      settled = true;
      if (timer !== null) clearTimeout(timer);
    }
  }

  /** One probe round, and the failover of each rank found failed. */
  private async round(): Promise<void> {
    const ranks = liveRanks(this.host.spec.map);
    const seen = await Promise.all(ranks.map((j) => this.probe(j)));
    const failed = this.watch.check(new Map(ranks.map((j, i) => [j, seen[i] ?? null])), Date.now());
    for (const [rank, reason] of failed) await this.failover(rank, reason);
  }

  private async probe(j: number): Promise<ExpertObservation> {
    let timer: ReturnType<typeof setTimeout> | null = null;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), HEALTH_TIMEOUT_MS);
    });
    try {
      const h = await Promise.race([this.expert(j).moeHealth(), late]);
      return h === undefined ? null : h;
    } catch {
      return null;
    } finally {
      if (timer !== null) clearTimeout(timer);
    }
  }

  private async failover(rank: number, reason: string): Promise<void> {
    const { spec, log } = this.host;
    const from = spec.map;
    const event: FailoverEvent = {
      rank,
      reason,
      detectedAt: Date.now(),
      recoveredAt: null,
      fromVersion: from.version,
      toVersion: null,
      numReplicated: 0,
      numReloaded: 0,
      error: null,
    };
    this.events.push(event);
    log.warn("moe.expert_failed", { instanceId: spec.instanceId, rank, reason });
    const plan = failoverMap(from, rank);
    try {
      if (!plan) throw new Error("no other expert rank is up to take its experts");
      await Promise.all(
        [...plan.loads].map(([j, experts]) => this.expert(j).addExperts({ experts })),
      );
      event.toVersion = plan.map.version;
      event.numReplicated = plan.numReplicated;
      event.numReloaded = plan.numReloaded;
      await this.host.broadcast({ map: plan.map });
      event.recoveredAt = Date.now();
      log.warn("moe.expert_failed_over", {
        instanceId: spec.instanceId,
        rank,
        toVersion: plan.map.version,
        numReplicated: plan.numReplicated,
        numReloaded: plan.numReloaded,
        recoveryMs: event.recoveredAt - event.detectedAt,
      });
    } catch (e) {
      event.error = `expert rank ${rank} failed (${reason}) and could not be failed over: ${(e as Error).message}`;
      log.error("moe.failover_failed", { instanceId: spec.instanceId, rank, ...errorFields(e) });
      await this.host.broadcast({ error: event.error });
    }
  }
}
