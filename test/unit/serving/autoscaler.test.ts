/**
 * The autoscaler's policy: out under a queue or a sustained SLO-miss rate, in when underloaded,
 * to zero when idle; and which tasks count as SLO misses for each role.
 */
import { describe, expect, it } from "vitest";
import {
  decideScale,
  type RoleSignals,
  sloMisses,
  type TaskLatency,
} from "../../../shared/serving/autoscaler.ts";

const policy = {
  maxWaitingPerInstance: 4,
  minRunningPerInstance: 2,
  scaleToZeroAfterMs: 60_000,
  cooldownMs: 30_000,
  maxSloMissRate: 0.2,
  minSloTasks: 5,
};
const bounds = { min: 0, max: 8 };
const signals = (s: Partial<RoleSignals>): RoleSignals => ({
  numServing: 1,
  numStarting: 0,
  numWaiting: 0,
  numRunning: 0,
  idleMs: 0,
  sinceScaledMs: 3_600_000,
  numSloTasks: 0,
  numSloMisses: 0,
  ...s,
});

describe("decideScale", () => {
  it("scales out to enough instances for the queue, within max", () => {
    expect(decideScale(signals({ numWaiting: 5 }), bounds, policy)).toEqual({
      target: 2,
      reason: "queue",
    });
    expect(decideScale(signals({ numServing: 2, numWaiting: 20 }), bounds, policy).target).toBe(5);
    expect(decideScale(signals({ numWaiting: 400 }), bounds, policy).target).toBe(8);
  });

  it("counts starting instances as capacity on the way", () => {
    expect(decideScale(signals({ numStarting: 1, numWaiting: 8 }), bounds, policy)).toEqual({
      target: 2,
      reason: "steady",
    });
  });

  it("scales to its minimum after the idle period with nothing queued or running", () => {
    expect(decideScale(signals({ idleMs: 60_000 }), bounds, policy)).toEqual({
      target: 0,
      reason: "idle",
    });
    expect(decideScale(signals({ idleMs: 59_999 }), bounds, policy).target).toBe(1);
    expect(decideScale(signals({ idleMs: 60_000, numRunning: 1 }), bounds, policy).target).toBe(1);
    expect(decideScale(signals({ idleMs: 60_000 }), { min: 1, max: 8 }, policy).target).toBe(1);
  });

  it("scales in by one when the load fits on one fewer instance", () => {
    expect(
      decideScale(signals({ numServing: 3, numRunning: 3, idleMs: 0 }), bounds, policy),
    ).toEqual({
      target: 2,
      reason: "underloaded",
    });
    expect(decideScale(signals({ numServing: 3, numRunning: 4 }), bounds, policy).target).toBe(3);
    // never while instances are still starting
    expect(
      decideScale(signals({ numServing: 3, numStarting: 1, numRunning: 0 }), bounds, policy).target,
    ).toBe(4);
  });

  it("holds scale-in and scale-to-zero during the cooldown after a target change, not scale-out", () => {
    const recent = { sinceScaledMs: 29_999 };
    expect(decideScale(signals({ ...recent, idleMs: 60_000 }), bounds, policy)).toEqual({
      target: 1,
      reason: "cooldown",
    });
    expect(
      decideScale(signals({ ...recent, numServing: 3, numRunning: 0 }), bounds, policy).target,
    ).toBe(3);
    expect(decideScale(signals({ ...recent, numWaiting: 9 }), bounds, policy)).toEqual({
      target: 3,
      reason: "queue",
    });
  });

  it("leaves a group at zero: it scales from zero on a request", () => {
    expect(decideScale(signals({ numServing: 0 }), bounds, policy)).toEqual({
      target: 0,
      reason: "steady",
    });
  });

  it("scales out by one on a sustained SLO-miss rate with no queue", () => {
    const busy = { numServing: 2, numRunning: 6 };
    expect(
      decideScale(signals({ ...busy, numSloTasks: 10, numSloMisses: 3 }), bounds, policy),
    ).toEqual({ target: 3, reason: "slo" });
    // at the rate, not above it: steady
    expect(
      decideScale(signals({ ...busy, numSloTasks: 10, numSloMisses: 2 }), bounds, policy).reason,
    ).toBe("steady");
    // too few tasks for a rate (one slow task is not sustained)
    expect(
      decideScale(signals({ ...busy, numSloTasks: 4, numSloMisses: 4 }), bounds, policy).reason,
    ).toBe("steady");
    // an instance still starting: its effect is not measured yet
    expect(
      decideScale(
        signals({ ...busy, numStarting: 1, numSloTasks: 10, numSloMisses: 10 }),
        bounds,
        policy,
      ),
    ).toEqual({ target: 3, reason: "steady" });
    // at its maximum it holds (and does not scale in while missing)
    expect(
      decideScale(
        signals({ numServing: 8, numRunning: 1, numSloTasks: 10, numSloMisses: 10 }),
        bounds,
        policy,
      ),
    ).toEqual({ target: 8, reason: "slo" });
  });

  it("lets a queue ask for more than the SLO's one instance", () => {
    const s = signals({ numWaiting: 20, numSloTasks: 10, numSloMisses: 10 });
    expect(decideScale(s, bounds, policy)).toEqual({ target: 5, reason: "queue" });
  });
});

describe("sloMisses", () => {
  const slo = { ttftMs: 100, tpotMs: 10 };
  const tasks: TaskLatency[] = [
    { endedAt: 1_000, ttftMs: 500, tpotMs: 50 }, // before the window
    { endedAt: 2_001, ttftMs: 150, tpotMs: 5 }, // slow first token
    { endedAt: 2_002, ttftMs: 50, tpotMs: 20 }, // slow decode
    { endedAt: 2_003, ttftMs: 50, tpotMs: null }, // one token: no TPOT
    { endedAt: 2_004, ttftMs: 100, tpotMs: 10 }, // exactly on target: met
  ];

  it("counts the window's tasks; colocated answers for both TTFT and TPOT", () => {
    expect(sloMisses(tasks, "colocated", slo, 2_000)).toEqual({
      numSloTasks: 4,
      numSloMisses: 2,
    });
  });

  it("holds prefill to TTFT and decode to TPOT", () => {
    expect(sloMisses(tasks, "prefill", slo, 2_000).numSloMisses).toBe(1);
    expect(sloMisses(tasks, "decode", slo, 2_000).numSloMisses).toBe(1);
    expect(sloMisses(tasks, "decode", slo, 0)).toEqual({ numSloTasks: 5, numSloMisses: 2 });
  });
});
