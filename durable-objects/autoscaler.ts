/**
 * The ClusterManager's autoscaler: on its alarm, for each role of each autoscaled deployment
 * (min below max in some role; prefill and decode separately), reads the load its serving Npus
 * report (queued and running sequences, when a task last ended, their latest tasks' TTFT and
 * TPOT against the deployment's SLO) and scales to the target the pure policy
 * (shared/serving/autoscaler.ts) decides: out under a queue or a sustained SLO-miss rate, in
 * (draining) when underloaded, to its minimum (zero) after SCALE_TO_ZERO_AFTER_S idle. Each tick also tops up
 * the pre-warmed pool.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { npuName } from "../shared/protocol/names.ts";
import {
  type AutoscalePolicy,
  decideScale,
  type RoleSignals,
  type ScaleDecision,
  sloMisses,
} from "../shared/serving/autoscaler.ts";
import type { DeploymentRecord } from "../shared/types/deployments.ts";
import {
  DEFAULT_SLO,
  type InstanceStatus,
  SCALABLE_ROLES,
  type ScalableRole,
  type SloTargets,
} from "../shared/types/instances.ts";
import type { InstanceRole } from "../shared/types/records.ts";
import { type Env, getConfig } from "./env.ts";
import type { InstancePool } from "./instance-pool.ts";

/** No scale-in within this long of a target change. */
export const SCALE_IN_COOLDOWN_MS = 30_000;

/**
 * SLO misses count over the tasks that ended in the last SLO_WINDOW_MS (and since the target last
 * changed, so misses from before a scale-out do not call for another); more than
 * SLO_MAX_MISS_RATE of at least SLO_MIN_TASKS of them missing scales the group out by one.
 */
export const SLO_WINDOW_MS = 10_000;
export const SLO_MAX_MISS_RATE = 0.2;
export const SLO_MIN_TASKS = 5;

/** Period of the autoscaler's alarm. */
export const AUTOSCALE_INTERVAL_MS = 2_000;

export interface AutoscalerHost {
  ctx: DurableObjectState;
  env: Env;
  log: Logger;
  pool: InstancePool;
  deployments(): DeploymentRecord[];
}

function autoscaled(d: DeploymentRecord): boolean {
  return SCALABLE_ROLES.some((r) => d.scaling.min[r] !== d.scaling.max[r]);
}

export class Autoscaler {
  constructor(private readonly h: AutoscalerHost) {}

  #policy(): AutoscalePolicy {
    return {
      maxWaitingPerInstance: 4,
      minRunningPerInstance: 2,
      scaleToZeroAfterMs: getConfig(this.h.env).scaleToZeroAfterMs,
      cooldownMs: SCALE_IN_COOLDOWN_MS,
      maxSloMissRate: SLO_MAX_MISS_RATE,
      minSloTasks: SLO_MIN_TASKS,
    };
  }

  /** Sets the alarm for the next tick unless one is set. */
  arm(): void {
    this.h.ctx.waitUntil(
      (async () => {
        if ((await this.h.ctx.storage.getAlarm()) === null) {
          await this.h.ctx.storage.setAlarm(Date.now() + AUTOSCALE_INTERVAL_MS);
        }
      })(),
    );
  }

  /** One tick: a decision per role of every autoscaled deployment, then the pool topped up. */
  async tick(
    now: number,
  ): Promise<{ deploymentId: string; role: InstanceRole; decision: ScaleDecision }[]> {
    const out: { deploymentId: string; role: InstanceRole; decision: ScaleDecision }[] = [];
    const ds = this.h.deployments().filter(autoscaled);
    for (const d of ds) {
      const statuses = this.h.pool.statuses(d.id);
      const target = { ...d.scaling.target };
      let changed = false;
      for (const role of SCALABLE_ROLES) {
        if (d.scaling.max[role] === 0) continue;
        const signals = await this.#signals(
          statuses.filter((s) => s.role === role),
          now,
          {
            role,
            slo: d.scaling.slo ?? DEFAULT_SLO,
            scaledAt: d.scaling.scaledAt,
          },
        );
        const decision = decideScale(
          signals,
          { min: d.scaling.min[role], max: d.scaling.max[role] },
          this.#policy(),
        );
        out.push({ deploymentId: d.id, role, decision });
        if (decision.target !== signals.numServing + signals.numStarting) {
          target[role] = decision.target;
          changed = true;
        }
      }
      if (changed) {
        this.h.log.info("autoscaler.scaled", { deploymentId: d.id, target });
        this.h.pool.scale(d, target);
      }
    }
    await this.h.pool.warm.refill();
    if (ds.length > 0) await this.h.ctx.storage.setAlarm(now + AUTOSCALE_INTERVAL_MS);
    return out;
  }

  async #signals(
    statuses: InstanceStatus[],
    now: number,
    g: { role: ScalableRole; slo: SloTargets; scaledAt: number },
  ): Promise<RoleSignals> {
    const serving = statuses.filter((s) => s.state === "serving");
    const s: RoleSignals = {
      numServing: serving.length,
      numStarting: statuses.filter((x) => x.state !== "serving" && x.state !== "draining").length,
      numWaiting: 0,
      numRunning: 0,
      idleMs: 0,
      sinceScaledMs: now - g.scaledAt,
      numSloTasks: 0,
      numSloMisses: 0,
    };
    const sinceAt = Math.max(now - SLO_WINDOW_MS, g.scaledAt);
    let lastActiveAt = 0;
    const stats = await Promise.allSettled(
      serving.map((x) => this.h.env.NPU.getByName(npuName(x.id)).stats()),
    );
    for (const r of stats) {
      if (r.status === "rejected") {
        this.h.log.warn("autoscaler.stats_failed", errorFields(r.reason));
        continue;
      }
      s.numWaiting += r.value.numWaiting;
      s.numRunning += r.value.numRunning;
      lastActiveAt = Math.max(lastActiveAt, r.value.lastActiveAt);
      const slo = sloMisses(r.value.recentTasks, g.role, g.slo, sinceAt);
      s.numSloTasks += slo.numSloTasks;
      s.numSloMisses += slo.numSloMisses;
    }
    s.idleMs = serving.length > 0 ? Math.max(0, now - lastActiveAt) : 0;
    return s;
  }
}
