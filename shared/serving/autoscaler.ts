/**
 * The autoscaler's policy: a pure function from one role group's signals (its serving and
 * starting instances, their queued and running sequences, its recent tasks' SLO misses, how long
 * it has been idle) to that group's target instance count. The ClusterManager calls it on its
 * alarm for each role of each autoscaled deployment (prefill and decode separately) and scales
 * to the result.
 */
import type { ScalableRole, SloTargets } from "../types/instances.ts";

/** One ended task's latencies as its instance measured them (null: not measurable). */
export interface TaskLatency {
  endedAt: number;
  /** From the task's acceptance on the instance to its first token. */
  ttftMs: number | null;
  /** Per output token after the first, per sequence (null below two tokens). */
  tpotMs: number | null;
}

export interface RoleSignals {
  /** Serving instances. */
  numServing: number;
  /** Instances on their way up (reserved .. warming). */
  numStarting: number;
  /** Sequences waiting to run, summed over the serving instances. */
  numWaiting: number;
  /** Sequences running, summed over the serving instances. */
  numRunning: number;
  /** Milliseconds since any instance of the group last ended a task. */
  idleMs: number;
  /** Milliseconds since the deployment's target last changed (by hand or by the autoscaler). */
  sinceScaledMs: number;
  /** Tasks of the group that ended in the SLO window, and how many of them missed the SLO. */
  numSloTasks: number;
  numSloMisses: number;
}

/**
 * The tasks in `samples` that ended after `sinceAt` and how many missed `slo`: a prefill group
 * answers for TTFT (its tasks end at the first token), a decode group for TPOT (its first token
 * came from prefill), a colocated one for both.
 */
export function sloMisses(
  samples: readonly TaskLatency[],
  role: ScalableRole,
  slo: SloTargets,
  sinceAt: number,
): { numSloTasks: number; numSloMisses: number } {
  let numSloTasks = 0;
  let numSloMisses = 0;
  for (const t of samples) {
    if (t.endedAt <= sinceAt) continue;
    numSloTasks++;
    const ttft = role !== "decode" && t.ttftMs !== null && t.ttftMs > slo.ttftMs;
    const tpot = role !== "prefill" && t.tpotMs !== null && t.tpotMs > slo.tpotMs;
    if (ttft || tpot) numSloMisses++;
  }
  return { numSloTasks, numSloMisses };
}

export interface AutoscalePolicy {
  /** Queued sequences per instance above which the group scales out. */
  maxWaitingPerInstance: number;
  /** Running sequences per instance below which one instance can go (scale in). */
  minRunningPerInstance: number;
  /** Idle time after which the group scales to its minimum (zero when min is 0). */
  scaleToZeroAfterMs: number;
  /** No scale-in within this long of the last target change (scale-out is never held back). */
  cooldownMs: number;
  /** Share of the window's tasks missing the SLO above which the group scales out by one. */
  maxSloMissRate: number;
  /** Fewest tasks in the window for their miss rate to count (a sustained rate, not one task). */
  minSloTasks: number;
}

export interface ScaleDecision {
  target: number;
  reason: "queue" | "slo" | "idle" | "underloaded" | "steady" | "cooldown";
}

/**
 * The group's next target within [min, max]. Out: when the queue exceeds what the instances
 * (serving and starting) should hold, enough instances for the queue; else one more when at
 * least minSloTasks tasks ended in the window and more than maxSloMissRate of them missed the
 * SLO, unless an instance is still starting (its effect is not in the window yet). To zero: idle for
 * scaleToZeroAfterMs with nothing queued or running. In: one instance less when nothing waits and
 * the running sequences fit under minRunningPerInstance on one fewer (never below one: going to
 * zero is only by idleness). Neither within cooldownMs of the last target change, so a target
 * set by hand holds a while and the group does not flap. A group with no instance stays there:
 * it scales from zero on a request.
 */
export function decideScale(
  s: RoleSignals,
  bounds: { min: number; max: number },
  p: AutoscalePolicy,
): ScaleDecision {
  const clamp = (n: number) => Math.min(bounds.max, Math.max(bounds.min, n));
  const n = s.numServing + s.numStarting;
  if (n === 0) return { target: clamp(0), reason: "steady" };
  if (s.numWaiting > p.maxWaitingPerInstance * n) {
    const need = Math.ceil(s.numWaiting / p.maxWaitingPerInstance);
    return { target: clamp(Math.max(n + 1, need)), reason: "queue" };
  }
  if (
    s.numStarting === 0 &&
    s.numSloTasks >= p.minSloTasks &&
    s.numSloMisses > p.maxSloMissRate * s.numSloTasks
  ) {
    return { target: clamp(n + 1), reason: "slo" };
  }
  const quiet = s.numWaiting === 0 && s.numRunning === 0;
  const cooling = s.sinceScaledMs < p.cooldownMs;
  if (quiet && s.idleMs >= p.scaleToZeroAfterMs) {
    return cooling
      ? { target: clamp(n), reason: "cooldown" }
      : { target: clamp(0), reason: "idle" };
  }
  if (
    !cooling &&
    s.numStarting === 0 &&
    s.numWaiting === 0 &&
    n > 1 &&
    s.numRunning < p.minRunningPerInstance * (n - 1)
  ) {
    return { target: clamp(n - 1), reason: "underloaded" };
  }
  return { target: clamp(n), reason: "steady" };
}
