import { describe, expect, it } from "vitest";
import { MOONCAKE_BLOCK_SIZE, poissonArrivals, promptTokenIds } from "../../../bench/traces.ts";
import { scheduleRequest } from "../../../shared/serving/scheduling.ts";
import {
  type PlacementRecord,
  type RequestOutcome,
  type SimRequest,
  simulate,
} from "../../../shared/sim/cluster.ts";
import { checkModelCard, type ModelCard } from "../../../shared/sim/cost-model.ts";
import { EventQueue } from "../../../shared/sim/events.ts";
import { measureHeatmap } from "../../../shared/sim/heatmap.ts";
import { asBurst, burstThroughputRps } from "../../../shared/sim/load.ts";
import { loadImbalance, report } from "../../../shared/sim/report.ts";
import { SCHEDULER_POLICIES } from "../../../shared/types/deployments.ts";
import { testCard } from "../../helpers/sim-card.ts";

const CARD: ModelCard = testCard(8);
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

  it("adds the card's request, step and per-sampled-token overheads where they occur", () => {
    const card: ModelCard = {
      ...CARD,
      requestOverheadMs: 7,
      stepOverheadMs: 0.25,
      tokenOverheadMs: 0.125,
    };
    const pairs = (start: number, n: number) => n * start + (n * (n + 1)) / 2;
    const engine = (tokens: number, attended: number, seqs: number) =>
      1 + 0.01 * tokens + 0.001 * attended + 0.5 * seqs;
    // 600 prompt tokens in 512-token steps: the first chunk samples nothing, the second does
    const long = simulate([{ id: "x", arrivalMs: 0, promptIds: ids(600, 0), outputTokens: 3 }], {
      card,
      numInstances: 1,
      policy: "deepflow",
    }).outcomes[0]!;
    const chunk1 = engine(512, pairs(0, 512), 1) + 0.25;
    const chunk2 = engine(88, pairs(512, 88), 1) + 0.25 + 0.125;
    expect(long.firstTokenMs! - long.arrivalMs).toBeCloseTo(7 + chunk1 + chunk2, 9);
    let decode = 0;
    for (let k = 1; k < 3; k++) decode += engine(1, 600 + k, 1) + 0.25 + 0.125;
    expect(long.finishMs! - long.arrivalMs).toBeCloseTo(7 + chunk1 + chunk2 + decode, 9);
    // a prefills alone; then a's decode and b's prefill share a step: two tokens' overheads
    const two = simulate(
      [
        { id: "a", arrivalMs: 5, promptIds: ids(100, 0), outputTokens: 3 },
        { id: "b", arrivalMs: 5, promptIds: ids(100, 1000), outputTokens: 1 },
      ],
      { card, numInstances: 1, policy: "deepflow" },
    ).outcomes;
    const first = engine(100, pairs(0, 100), 1) + 0.25 + 0.125;
    const shared = engine(101, pairs(0, 100) + 101, 2) + 0.25 + 2 * 0.125;
    expect(two[0]!.firstTokenMs! - 5).toBeCloseTo(7 + first, 9);
    expect(two[1]!.firstTokenMs! - 5).toBeCloseTo(7 + first + shared, 9);
  });

  it("charges prompt tokens and the finish, and stalls busy steps when the path shares the thread", () => {
    const card: ModelCard = {
      ...CARD,
      requestOverheadMs: 7,
      promptTokenOverheadMs: 0.5,
      finishOverheadMs: 3,
      pathSharesThread: true,
    };
    const pairs = (start: number, n: number) => n * start + (n * (n + 1)) / 2;
    const engine = (tokens: number, attended: number, seqs: number) =>
      1 + 0.01 * tokens + 0.001 * attended + 0.5 * seqs;
    const reqs: SimRequest[] = [
      { id: "a", arrivalMs: 0, promptIds: ids(100, 0), outputTokens: 3 },
      { id: "b", arrivalMs: 58, promptIds: ids(10, 5000), outputTokens: 1 },
    ];
    const run = (c: ModelCard) =>
      simulate(reqs, { card: c, numInstances: 1, policy: "deepflow" }).outcomes;
    const [a, b] = run(card) as [RequestOutcome, RequestOutcome];
    // a reaches its instance at 7 + 0.5 * 100 = 57 and prefills
    const prefillEnd = 57 + engine(100, pairs(0, 100), 1);
    expect(a.firstTokenMs!).toBeCloseTo(prefillEnd, 9);
    // b's admission (7 + 0.5 * 10 = 12 ms, from 58) runs while a prefills: a's next step waits
    const decode1End = prefillEnd + engine(1, 101, 1) + 12;
    // b (at the instance from 70) joins a's last decode; both end 3 ms after that step
    const step2End = decode1End + engine(11, pairs(0, 10) + 102, 2);
    expect(b.firstTokenMs!).toBeCloseTo(step2End, 9);
    expect(a.finishMs!).toBeCloseTo(step2End + 3, 9);
    expect(b.finishMs!).toBeCloseTo(step2End + 3, 9);
    // deployed (the path on other machines), b's admission does not delay a's steps
    const [a2] = run({ ...card, pathSharesThread: false }) as [RequestOutcome];
    expect(a2.finishMs!).toBeLessThan(a.finishMs! - 11);
  });

  it("prices a request's path by the shared thread's idle time before it", () => {
    const card: ModelCard = {
      ...CARD,
      requestOverheadMs: 7,
      finishOverheadMs: 2,
      idleRequestOverheadMs: [
        [100, 4],
        [1100, 24],
      ],
      pathSharesThread: true,
    };
    const engine1 = 1 + 0.01 * 10 + 0.001 * 55 + 0.5; // a 10-token prefill, alone
    const midAt = 24 + engine1 + 2 + 600;
    const reqs: SimRequest[] = [
      { id: "cold", arrivalMs: 0, promptIds: ids(10, 0), outputTokens: 1 },
      // 600 ms after the thread last worked (cold's finish), half-way along the table
      { id: "mid", arrivalMs: midAt, promptIds: ids(10, 100), outputTokens: 40 },
      // arrives while mid decodes: the thread is busy (idle 0), so the table's first point holds
      { id: "busy", arrivalMs: midAt + 40, promptIds: ids(10, 200), outputTokens: 1 },
    ];
    const placedAt = (c: ModelCard) => {
      const at = new Map<string, number>();
      const r = simulate(reqs, {
        card: c,
        numInstances: 1,
        policy: "deepflow",
        onPlace: (p) => at.set(p.requestId, p.atMs),
      });
      expect(r.outcomes.every((o) => o.failure === null)).toBe(true);
      return at;
    };
    const at = placedAt(card);
    // nothing ran before cold: idle past the table's end, its last point holds
    expect(at.get("cold")).toBeCloseTo(24, 9);
    expect(at.get("mid")! - midAt).toBeCloseTo(14, 9);
    expect(at.get("busy")! - (midAt + 40)).toBeCloseTo(4, 9);
    // without the shared thread the table is not used: the fixed 7 ms holds
    const deployed = placedAt({ ...card, pathSharesThread: false });
    expect(deployed.get("mid")! - midAt).toBeCloseTo(7, 9);
    expect(deployed.get("busy")! - (midAt + 40)).toBeCloseTo(7, 9);
  });

  it("adds one draw from the card's measured jitter to each request's path on a shared thread", () => {
    const card: ModelCard = {
      ...CARD,
      requestOverheadMs: 5,
      requestJitterMs: [-2, 0, 100],
      pathSharesThread: true,
    };
    // one-token requests 1 s apart: each finds the thread idle and nothing queued
    const reqs: SimRequest[] = Array.from({ length: 300 }, (_, i) => ({
      id: `r${i}`,
      arrivalMs: i * 1000,
      promptIds: ids(1, i * 7),
      outputTokens: 1,
    }));
    const admissions = (c: ModelCard, seed?: number) => {
      const out: number[] = [];
      simulate(reqs, {
        card: c,
        numInstances: 1,
        policy: "round-robin",
        seed,
        onPlace: (p) => out.push(p.atMs - Number(p.requestId.slice(1)) * 1000),
      });
      return out;
    };
    const a = admissions(card);
    for (const x of a) expect([3, 5, 105].some((v) => Math.abs(x - v) < 1e-9)).toBe(true);
    for (const v of [3, 5, 105]) {
      const share = a.filter((x) => Math.abs(x - v) < 1e-9).length / a.length;
      expect(share).toBeGreaterThan(0.25);
      expect(share).toBeLessThan(0.42);
    }
    expect(admissions(card)).toEqual(a);
    expect(admissions(card, 2)).not.toEqual(a);
    // a draw below the overhead's negative holds the admission at 0
    expect(new Set(admissions({ ...card, requestJitterMs: [-50] }))).toEqual(new Set([0]));
    // deployed (no shared thread): no draw, the fixed cost
    expect(new Set(admissions({ ...card, pathSharesThread: false }))).toEqual(new Set([5]));
  });

  it("refuses a card whose idle table or jitter is out of order", () => {
    expect(
      checkModelCard({
        ...CARD,
        idleRequestOverheadMs: [
          [0, 5],
          [500, 9],
        ],
      }),
    ).toBeNull();
    expect(
      checkModelCard({
        ...CARD,
        idleRequestOverheadMs: [
          [500, 5],
          [0, 9],
        ],
      }),
    ).toMatch(/idleRequestOverheadMs/);
    expect(checkModelCard({ ...CARD, idleRequestOverheadMs: [[0, -1]] })).toMatch(
      /idleRequestOverheadMs/,
    );
    expect(checkModelCard({ ...CARD, requestJitterMs: [-3, 0, 7] })).toBeNull();
    expect(checkModelCard({ ...CARD, requestJitterMs: [7, 0] })).toMatch(/requestJitterMs/);
  });

  it("runs every instance's steps in turn on a shared thread", () => {
    const engine1 = 1 + 0.01 * 10 + 0.001 * 55 + 0.5; // a 10-token prefill, alone
    const reqs: SimRequest[] = [
      { id: "a", arrivalMs: 0, promptIds: ids(10, 0), outputTokens: 1 },
      { id: "b", arrivalMs: 0, promptIds: ids(10, 100), outputTokens: 1 },
    ];
    const run = (shared: boolean) =>
      simulate(reqs, {
        card: { ...CARD, pathSharesThread: shared },
        numInstances: 2,
        policy: "round-robin",
      }).outcomes;
    const [a, b] = run(true) as [RequestOutcome, RequestOutcome];
    expect(a.instanceId).not.toBe(b.instanceId);
    expect(a.firstTokenMs!).toBeCloseTo(engine1, 9);
    expect(b.firstTokenMs!).toBeCloseTo(2 * engine1, 9);
    // on instances of their own (deployed) both prefill at once
    const [, b2] = run(false) as [RequestOutcome, RequestOutcome];
    expect(b2.firstTokenMs!).toBeCloseTo(engine1, 9);
  });

  it("holds an instance's next step for a request's first report, not for a one-token request", () => {
    const engine1 = 1 + 0.01 * 10 + 0.001 * 55 + 0.5; // a 10-token prefill, alone
    const decode = 1 + 0.01 + 0.001 * 11 + 0.5; // one decode at position 10
    const reqs: SimRequest[] = [
      { id: "one", arrivalMs: 0, promptIds: ids(10, 0), outputTokens: 1 },
      { id: "two", arrivalMs: 0, promptIds: ids(10, 100), outputTokens: 2 },
    ];
    const run = (shared: boolean) =>
      simulate(reqs, {
        card: { ...CARD, firstTokenOverheadMs: 4, pathSharesThread: shared },
        numInstances: 2,
        policy: "round-robin",
      }).outcomes as [RequestOutcome, RequestOutcome];
    // shared thread: one's prefill, then two's; only two's first token holds the thread (4 ms,
    // 8 if one's counted too) before its decode; neither TTFT includes it
    const [one, two] = run(true);
    expect(one.instanceId).not.toBe(two.instanceId);
    expect(one.firstTokenMs!).toBeCloseTo(engine1, 9);
    expect(one.finishMs!).toBeCloseTo(engine1, 9);
    expect(two.firstTokenMs!).toBeCloseTo(2 * engine1, 9);
    expect(two.finishMs!).toBeCloseTo(2 * engine1 + 4 + decode, 9);
    // deployed: each instance's own next step waits
    const [, two2] = run(false);
    expect(two2.firstTokenMs!).toBeCloseTo(engine1, 9);
    expect(two2.finishMs!).toBeCloseTo(engine1 + 4 + decode, 9);
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
    for (const policy of SCHEDULER_POLICIES) {
      const seen: PlacementRecord[] = [];
      const res = simulate(reqs, {
        card: CARD,
        numInstances: 2,
        policy,
        prefixIndexTokens: CARD.blockSize, // every block: the prompts are 4 blocks long
        onPlace: (p) => seen.push(p),
      });
      expect(seen).toHaveLength(3);
      for (const s of seen) {
        const direct = scheduleRequest({
          deployments: s.deployments,
          blockKeys: s.blockKeys,
          blockSize: CARD.blockSize,
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
      // locality-only: p1 matches nothing and goes to the idle i1; p2 follows its prefix
      if (policy === "locality-only") expect(where).toEqual(["i0", "i1", "i1"]);
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

  it("charges a decode's KV reads at e when the card has one", () => {
    const p = 100;
    const card = { ...CARD, e: 0.01 };
    const o = simulate([{ id: "x", arrivalMs: 0, promptIds: ids(p, 0), outputTokens: 3 }], {
      card,
      numInstances: 1,
      policy: "deepflow",
    }).outcomes[0]!;
    const prefill = 1 + 0.01 * p + 0.001 * ((p * (p + 1)) / 2) + 0.5;
    // decodes at positions 100 and 101 read 101 and 102 positions at e, not c
    const decode = 2 * (1 + 0.01 + 0.5) + 0.01 * (101 + 102);
    expect(o.finishMs!).toBeCloseTo(prefill + decode, 9);
  });

  it("reports busy-time imbalance per instance", () => {
    expect(loadImbalance([1, 1, 2])).toBe(1.5);
    expect(loadImbalance([0, 0])).toBe(1);
    // two equal requests on two instances under least-loaded: one each, even
    const reqs = [0, 1].map((i) => ({
      id: `r${i}`,
      arrivalMs: 0,
      promptIds: ids(50, i * 100),
      outputTokens: 3,
    }));
    const even = simulate(reqs, { card: CARD, numInstances: 2, policy: "least-loaded" });
    expect(report(even.outcomes, SLO, even.busyMs).load_imbalance).toBe(1);
    const one = simulate(reqs, { card: CARD, numInstances: 3, policy: "least-loaded" });
    expect(report(one.outcomes, SLO, one.busyMs).load_imbalance).toBeCloseTo(1.5, 3);
  });

  it("keys the prefix tree every prefixIndexTokens, counting a match in whole spans", () => {
    const shared = ids(160, 70_000); // 10 blocks of 16
    const reqs: SimRequest[] = [
      { id: "a", arrivalMs: 0, promptIds: [...shared, 5], outputTokens: 2 },
      { id: "b", arrivalMs: 1000, promptIds: [...shared, 6], outputTokens: 2 },
    ];
    const seen: PlacementRecord[] = [];
    simulate(reqs, {
      card: CARD,
      numInstances: 2,
      policy: "deepflow",
      prefixIndexTokens: 64, // every 4th 16-token block
      onPlace: (p) => seen.push(p),
    });
    expect(seen[1]!.blockKeys).toHaveLength(2); // blocks 4 and 8 of 10
    expect(seen[1]!.matches.get(seen[0]!.decision.instanceId!)).toBe(2);
    // the cost credits 2 strides x 4 blocks x 16 tokens = 128 cached tokens of 161
    const b = seen[1]!.decision;
    const there = b.scores.find((x) => x.instanceId === seen[0]!.decision.instanceId)!;
    expect(there.cost! - there.load).toBe(161 - 128);
    expect(b.instanceId).toBe(seen[0]!.decision.instanceId);
  });
});

describe("saturation", () => {
  it("measures a burst's completion rate between the 10th and 90th percentile", () => {
    // one instance, one sequence at a time: each request takes exactly the same time
    const card = { ...CARD, maxNumSeqs: 1 };
    const reqs = Array.from({ length: 21 }, (_, i) => ({
      id: `r${i}`,
      arrivalMs: 5000 * i,
      promptIds: ids(40, i * 50),
      outputTokens: 1,
    }));
    const burst = asBurst(reqs);
    expect(burst.every((r) => r.arrivalMs === 0)).toBe(true);
    const res = simulate(burst, { card, numInstances: 1, policy: "least-loaded" });
    const one = 1 + 0.01 * 40 + 0.001 * ((40 * 41) / 2) + 0.5;
    expect(burstThroughputRps(res.outcomes)).toBeCloseTo(1000 / one, 6);
    // two instances serve the same burst twice as fast
    const two = simulate(burst, { card, numInstances: 2, policy: "least-loaded" });
    expect(burstThroughputRps(two.outcomes)).toBeCloseTo(2000 / one, 1);
    expect(() => burstThroughputRps(res.outcomes.slice(0, 2))).toThrow(RangeError);
  });
});

describe("PD groups", () => {
  const PD_CARD: ModelCard = {
    ...CARD,
    kvBytesPerToken: 1000,
    fabricGBps: 0.5,
    fabricLatencyMs: 2,
  };

  it("prefills on one instance, moves the KV at the fabric's rate and decodes on another", () => {
    const p = 100;
    const n = 5;
    const res = simulate([{ id: "x", arrivalMs: 10, promptIds: ids(p, 0), outputTokens: n }], {
      card: PD_CARD,
      numInstances: 0,
      pd: { prefill: 1, decode: 1 },
      policy: "deepflow",
    });
    const o = res.outcomes[0]!;
    expect([o.failure, o.instanceId, o.decodeInstanceId]).toEqual([null, "p0", "d0"]);
    const prefill = 1 + 0.01 * p + 0.001 * ((p * (p + 1)) / 2) + 0.5;
    // 100 tokens x 1000 bytes over 0.5e9 bytes/s = 0.2 ms, plus 2 ms of latency
    const transfer = 2 + (p * 1000) / 0.5e6;
    let decode = 0;
    for (let k = 1; k < n; k++) decode += 1 + 0.01 + 0.001 * (p + k) + 0.5;
    expect(o.firstTokenMs! - o.arrivalMs).toBeCloseTo(prefill, 9);
    expect(o.finishMs! - o.arrivalMs).toBeCloseTo(prefill + transfer + decode, 9);
    expect(o.numOutputTokens).toBe(n);
    // the prefill instance computed the prompt only; the decode instance every later token
    expect(res.busyMs[0]).toBeCloseTo(prefill, 9);
    expect(res.busyMs[1]).toBeCloseTo(decode, 9);
  });

  it("queues a handoff until the decode instance has a slot", () => {
    const card = { ...PD_CARD, maxNumSeqs: 1 };
    const reqs = [0, 1].map((i) => ({
      id: `r${i}`,
      arrivalMs: 0,
      promptIds: ids(20, i * 100),
      outputTokens: 30,
    }));
    const res = simulate(reqs, {
      card,
      numInstances: 0,
      pd: { prefill: 1, decode: 1 },
      policy: "least-loaded",
    });
    expect(res.numDeferredImports).toBe(1);
    const [a, b] = res.outcomes;
    expect([a!.failure, b!.failure, a!.numOutputTokens, b!.numOutputTokens]).toEqual([
      null,
      null,
      30,
      30,
    ]);
    // r1's decode starts only when r0's ends
    expect(b!.finishMs!).toBeGreaterThan(a!.finishMs! + 29 * (1 + 0.01 + 0.5));
  });

  it("lets the heatmap send long prompts to PD and short ones to the colocated group", () => {
    const profile = {
      model: "test",
      measuredAt: 0,
      inputBuckets: [128, 4096],
      outputBuckets: [64],
      colocatedMs: [[100], [1000]],
      pdMs: [[150], [600]],
    };
    const reqs = [
      { id: "short", arrivalMs: 0, promptIds: ids(50, 0), outputTokens: 8 },
      { id: "long", arrivalMs: 0, promptIds: ids(2000, 500), outputTokens: 8 },
    ];
    const res = simulate(reqs, {
      card: PD_CARD,
      numInstances: 1,
      pd: { prefill: 1, decode: 1 },
      profile,
      policy: "deepflow",
    });
    expect(res.outcomes.map((o) => [o.instanceId, o.decodeInstanceId])).toEqual([
      ["i0", null],
      ["p0", "d0"],
    ]);
  });
});

describe("PD heatmap", () => {
  it("sees PD lose every cell, at every rate, when the fabric is slow", () => {
    const card: ModelCard = { ...CARD, kvBytesPerToken: 1e6, fabricGBps: 0.001 };
    const r = measureHeatmap(card, {
      inputBuckets: [64, 256],
      outputBuckets: [4, 16],
      utilizations: [0.3, 0.8],
      requestsPerCell: 12,
      seed: 1,
    });
    expect(r.signs.flat()).toEqual(Array.from({ length: 4 }, () => [-1, -1]));
    expect([r.numStable, r.numCells]).toEqual([4, 4]);
    // 64 prompt tokens x 1e6 bytes over 1e6 bytes/s: each PD request waits 64 s for its KV
    const pd = r.profiles[0]!.pdMs[0]![0]!;
    expect(pd).toBeGreaterThan(64_000);
    expect(r.profiles[0]!.colocatedMs[0]![0]!).toBeLessThan(1000);
  });
});
