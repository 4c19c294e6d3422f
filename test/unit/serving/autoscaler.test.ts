/** The autoscaler's policy: out under a queue, in when underloaded, to zero when idle. */
import { describe, expect, it } from "vitest";
import { decideScale, type RoleSignals } from "../../../shared/serving/autoscaler.ts";

const policy = {
  maxWaitingPerInstance: 4,
  minRunningPerInstance: 2,
  scaleToZeroAfterMs: 60_000,
  cooldownMs: 30_000,
};
const bounds = { min: 0, max: 8 };
const signals = (s: Partial<RoleSignals>): RoleSignals => ({
  numServing: 1,
  numStarting: 0,
  numWaiting: 0,
  numRunning: 0,
  idleMs: 0,
  sinceScaledMs: 3_600_000,
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
});
