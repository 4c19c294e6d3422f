import { describe, expect, it } from "vitest";
import { MOONCAKE_BLOCK_SIZE, poissonArrivals, promptTokenIds } from "../../../bench/traces.ts";
import { scheduleRequest } from "../../../shared/serving/scheduling.ts";
import { type PlacementRecord, type SimRequest, simulate } from "../../../shared/sim/cluster.ts";
import type { ModelCard } from "../../../shared/sim/cost-model.ts";
import { EventQueue } from "../../../shared/sim/events.ts";
import { report } from "../../../shared/sim/report.ts";

const CARD: ModelCard = {
  name: "test",
  source: "hand-written for tests",
  a: 1,
  b: 0.01,
  c: 0.001,
  d: 0.5,
  maxModelLen: 4096,
  kvCapacityTokens: 8192,
  blockSize: 16,
  maxNumSeqs: 8,
  maxNumBatchedTokens: 512,
};
const SLO = { ttftMs: 1e9, tpotMs: 1e9 };

function ids(n: number, from: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((from + i) % 30_000));
}

describe("EventQueue", () => {
  it("pops by time, ties in push order, and advances the clock", () => {
    const q = new EventQueue<string>();
    q.push(5, "c");
    q.push(1, "a");
    q.push(5, "d");
    q.push(3, "b");
    q.push(1, "a2");
    const seen: string[] = [];
    const times: number[] = [];
    for (let e = q.pop(); e; e = q.pop()) {
      seen.push(e.event);
      times.push(q.now);
    }
    expect(seen).toEqual(["a", "a2", "b", "c", "d"]);
    expect(times).toEqual([1, 1, 3, 5, 5]);
    expect(() => q.push(4, "late")).toThrow(RangeError);
  });
});

describe("simulate", () => {
  it("reproduces the cost model's arithmetic for one request", () => {
    const p = 100;
    const n = 5;
    const res = simulate([{ id: "x", arrivalMs: 10, promptIds: ids(p, 0), outputTokens: n }], {
      card: CARD,
      numInstances: 1,
      policy: "deepflow",
    });
    const o = res.outcomes[0]!;
    // prefill: 100 tokens attending 100 * 101 / 2 pairs, one sequence
    const prefill = 1 + 0.01 * p + 0.001 * ((p * (p + 1)) / 2) + 0.5;
    // decode k: one token at position p + k - 1 attends to p + k positions
    let decode = 0;
    for (let k = 1; k < n; k++) decode += 1 + 0.01 + 0.001 * (p + k) + 0.5;
    expect(o.failure).toBeNull();
    expect(o.firstTokenMs! - o.arrivalMs).toBeCloseTo(prefill, 9);
    expect(o.finishMs! - o.arrivalMs).toBeCloseTo(prefill + decode, 9);
    expect(o.numOutputTokens).toBe(n);
    expect(res.numSteps).toBe(n);
  });

  it("fails requests that cannot fit, and counts them", () => {
    const res = simulate(
      [
        { id: "ok", arrivalMs: 0, promptIds: ids(10, 0), outputTokens: 2 },
        { id: "long", arrivalMs: 0, promptIds: ids(4000, 0), outputTokens: 200 },
      ],
      { card: CARD, numInstances: 2, policy: "least-loaded" },
    );
    expect(res.outcomes.map((o) => o.failure)).toEqual([null, "context"]);
    const r = report(res.outcomes, SLO);
    expect([r.completed, r.failed, r.failure_reasons]).toEqual([1, 1, { context: 1 }]);
  });

  it("places as scheduleRequest does on the same states", () => {
    const prefix = ids(64, 50_000);
    const reqs: SimRequest[] = [
      { id: "u", arrivalMs: 0, promptIds: ids(64, 0), outputTokens: 2 },
      { id: "p1", arrivalMs: 0, promptIds: [...prefix, 7], outputTokens: 2 },
      { id: "p2", arrivalMs: 1000, promptIds: [...prefix, 8, 9], outputTokens: 2 },
    ];
    for (const policy of ["deepflow", "round-robin", "least-loaded"] as const) {
      const seen: PlacementRecord[] = [];
      const res = simulate(reqs, {
        card: CARD,
        numInstances: 2,
        policy,
        onPlace: (p) => seen.push(p),
      });
      expect(seen).toHaveLength(3);
      for (const s of seen) {
        const direct = scheduleRequest({
          deployments: s.deployments,
          blockKeys: s.blockKeys,
          numPromptTokens: s.decision.numPromptTokens,
          maxTokens: 2,
          prefixTree: { match: () => s.matches },
          predictor: { predict: () => s.predicted },
          profile: null,
          counters: s.counters,
        });
        expect(direct?.decision).toEqual(s.decision);
      }
      const where = res.outcomes.map((o) => o.instanceId);
      if (policy === "round-robin") expect(where).toEqual(["i0", "i1", "i0"]);
      if (policy === "least-loaded") expect(where.slice(0, 2)).toEqual(["i0", "i1"]);
      if (policy === "deepflow") {
        // p1 goes to the idle instance; p2, its prefix cached on i1, follows it there
        expect(where).toEqual(["i0", "i1", "i1"]);
        expect(seen[2]!.decision.reason).toBe("prefix");
        expect(res.outcomes[2]!.numCachedTokens).toBe(64);
      }
      // the load the policy saw is the real scheduler's: u was queued on i0 when p1 arrived
      const i0 = seen[1]!.deployments[0]!.instances[0]!;
      expect([i0.numRunning + i0.numWaiting, i0.numOutstandingTokens]).toEqual([1, 64 + 2]);
    }
  });

  function mooncakeLike(hashIds: (i: number) => number[], n: number): SimRequest[] {
    return Array.from({ length: n }, (_, i) => ({
      id: `r${i}`,
      arrivalMs: i * 5000,
      promptIds: promptTokenIds(
        { requestIndex: i, inputLength: 1200, hashIds: hashIds(i) },
        { blockTokens: MOONCAKE_BLOCK_SIZE, vocab: 32_000 },
      ),
      outputTokens: 4,
    }));
  }

  it("shows shared hash ids as prefix-cache hits", () => {
    const opts = { card: CARD, numInstances: 2, policy: "deepflow" as const };
    const shared = report(
      simulate(
        mooncakeLike(() => [0, 1], 4),
        opts,
      ).outcomes,
      SLO,
    );
    const distinct = report(
      simulate(
        mooncakeLike((i) => [2 * i + 10, 2 * i + 11], 4),
        opts,
      ).outcomes,
      SLO,
    );
    expect(distinct.cache_hit_rate).toBe(0);
    // requests 2..4 reuse the two shared 512-token blocks (1024 of 1200 tokens; the rest is unique)
    expect(shared.cache_hit_rate).toBeCloseTo((3 * 1024) / (4 * 1200), 4);
  });

  it("is deterministic for a seed", () => {
    const run = (seed: number) => {
      const arrivals = poissonArrivals(4, seed, 20_000);
      const reqs: SimRequest[] = arrivals.map((t, i) => ({
        id: `r${i}`,
        arrivalMs: t,
        promptIds: promptTokenIds(
          { requestIndex: i, inputLength: 300 + ((i * 37) % 900), hashIds: [0, i % 3] },
          { blockTokens: MOONCAKE_BLOCK_SIZE, vocab: 32_000, salt: seed },
        ),
        outputTokens: 1 + ((i * 13) % 40),
      }));
      return JSON.stringify(
        ["deepflow", "round-robin", "least-loaded"].map((policy) =>
          report(
            simulate(reqs, { card: CARD, numInstances: 3, policy: policy as "deepflow" }).outcomes,
            { ttftMs: 200, tpotMs: 20 },
          ),
        ),
      );
    };
    expect(run(5)).toBe(run(5));
    expect(run(5)).not.toBe(run(6));
  });
});
