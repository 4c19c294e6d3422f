import { describe, expect, it } from "vitest";
import { poissonArrivals } from "../../../bench/traces.ts";
import { type RequestOutcome, simulate } from "../../../shared/sim/cluster.ts";
import type { ModelCard } from "../../../shared/sim/cost-model.ts";
import { backlogAt, keptUp, sustainableRate } from "../../../shared/sim/load.ts";
import { testCard } from "../../helpers/sim-card.ts";

// one sequence at a time, every request 40 prompt tokens and 1 output token: a fixed service
// time of a + b*40 + c*(40*41/2) + d ms, so the instance serves exactly 1000 / that per second
const CARD: ModelCard = testCard(1);
const SERVICE_MS = 1 + 0.01 * 40 + 0.001 * ((40 * 41) / 2) + 0.5;
const CAPACITY_RPS = 1000 / SERVICE_MS;

function outcome(arrivalMs: number, finishMs: number | null, failure: string | null = null) {
  return {
    id: `r${arrivalMs}`,
    arrivalMs,
    instanceId: null,
    decodeInstanceId: null,
    numPromptTokens: 1,
    numOutputTokens: 1,
    numCachedTokens: 0,
    firstTokenMs: finishMs,
    finishMs,
    failure,
  } satisfies RequestOutcome;
}

/** Poisson arrivals at `rps` of `n` such requests, run until the last arrival. */
function probe(rps: number, n = 4000): RequestOutcome[] {
  const times = poissonArrivals(rps, 7, Number.POSITIVE_INFINITY, n);
  const reqs = times.map((t, i) => ({
    id: `r${i}`,
    arrivalMs: t,
    promptIds: Array.from({ length: 40 }, (_, j) => 3 + ((i * 40 + j) % 30_000)),
    outputTokens: 1,
  }));
  const stopAtMs = times[times.length - 1] as number;
  return simulate(reqs, { card: CARD, numInstances: 1, policy: "least-loaded", stopAtMs }).outcomes;
}

describe("backlog and keeping up", () => {
  it("counts arrived, unfinished requests; a failure leaves on arrival", () => {
    const o = [outcome(0, 5), outcome(1, 20), outcome(2, null), outcome(3, null, "context")];
    expect(backlogAt(o, 0)).toBe(1);
    expect(backlogAt(o, 4)).toBe(3); // r0, r1, r2 (the failure left)
    expect(backlogAt(o, 10)).toBe(2);
    expect(backlogAt(o, 30)).toBe(1);
  });

  it("accepts a level backlog and rejects a growing one", () => {
    const level = Array.from({ length: 100 }, (_, i) => outcome(i * 10, i * 10 + 15));
    expect(keptUp(level, 990)).toMatchObject({ kept: true, arrivals: 50 });
    // the second half's requests never finish: the backlog grows by all of them
    const growing = Array.from({ length: 100 }, (_, i) =>
      outcome(i * 10, i < 50 ? i * 10 + 15 : null),
    );
    const g = keptUp(growing, 990);
    expect(g.kept).toBe(false);
    expect(g.backlogEnd - g.backlogMid).toBe(49);
  });

  it("tells a stable queue from an overloaded one in the simulator", () => {
    const stable = probe(0.8 * CAPACITY_RPS);
    const last = Math.max(...stable.map((o) => o.arrivalMs));
    expect(keptUp(stable, last).kept).toBe(true);
    const over = probe(1.2 * CAPACITY_RPS);
    const overLast = Math.max(...over.map((o) => o.arrivalMs));
    expect(keptUp(over, overLast).kept).toBe(false);
    // the run stopped at the last arrival: the overloaded queue's tail is still unfinished
    expect(over.filter((o) => o.finishMs === null).length).toBeGreaterThan(100);
  });

  it("finds the saturation of a single-server queue near its service rate", () => {
    const keeps = (rps: number) => {
      const o = probe(rps);
      return keptUp(o, Math.max(...o.map((x) => x.arrivalMs))).kept;
    };
    const s = sustainableRate(keeps, 0.3 * CAPACITY_RPS);
    expect(s.rps / CAPACITY_RPS).toBeGreaterThan(0.85);
    expect(s.rps / CAPACITY_RPS).toBeLessThan(1.05);
  });
});

describe("sustainableRate", () => {
  it("brackets and bisects a threshold to 5% from above and below", () => {
    for (const guess of [1, 7.3, 40]) {
      const s = sustainableRate((r) => r <= 7.3, guess);
      expect(s.rps).toBeLessThanOrEqual(7.3);
      expect(s.rps).toBeGreaterThan(7.3 / 1.05);
      expect(s.probes.every((p) => p.kept === p.rps <= 7.3)).toBe(true);
    }
  });

  it("throws when nothing keeps up, and on a bad guess", () => {
    expect(() => sustainableRate(() => false, 10)).toThrow(RangeError);
    expect(() => sustainableRate(() => true, 0)).toThrow(RangeError);
  });
});
