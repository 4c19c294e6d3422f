/**
 * DeepFlow's PD heatmap, measured in the simulator, and its sign stability across request rates
 * (DeepFlow reports more than 80% of cells keeping their sign). Per (input, output) cell: requests
 * of exactly that shape (request-unique prompts, so no prefix reuse), served by two colocated
 * instances and by one prefill + one decode instance (the same hardware); the cell's rate is a
 * utilization of the colocated pair's saturation throughput on those requests (load.ts), Poisson
 * arrivals; the cell's time is the mean end-to-end latency. `v = colocated / pd - 1`, as the
 * paper stores it; a cell is sign-stable when v has one sign at every utilization. Pure.
 */

import { mulberry32 } from "../random.ts";
import type { PdProfile } from "../serving/pd-profile.ts";
import { simulate } from "./cluster.ts";
import type { ModelCard } from "./cost-model.ts";
import type { SimRequest } from "./instance.ts";
import { asBurst, burstThroughputRps } from "./load.ts";

export interface HeatmapOptions {
  inputBuckets: number[];
  outputBuckets: number[];
  utilizations: number[];
  requestsPerCell: number;
  seed: number;
}

export interface HeatmapResult {
  /** One profile per utilization, in order. */
  profiles: PdProfile[];
  /** Per cell (input-major): the sign of v at each utilization. */
  signs: number[][][];
  numStable: number;
  numCells: number;
}

function cellRequests(input: number, output: number, n: number, cell: number): SimRequest[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `c${cell}r${i}`,
    arrivalMs: 0,
    // unique ids per request: (cell, i) picks a disjoint range, so no prefix is shared
    promptIds: Array.from(
      { length: input },
      (_, k) => 3 + ((cell * 7919 + i * 104_729 + k) % 30_000),
    ),
    outputTokens: output,
  }));
}

function meanE2e(reqs: readonly SimRequest[], card: ModelCard, pd: boolean): number {
  const r = simulate(reqs, {
    card,
    numInstances: pd ? 0 : 2,
    pd: pd ? { prefill: 1, decode: 1 } : undefined,
    policy: "least-loaded",
  });
  const done = r.outcomes.filter((o) => o.finishMs !== null);
  if (done.length < reqs.length) throw new Error("a heatmap request failed: check the buckets");
  return done.reduce((a, o) => a + (o.finishMs as number) - o.arrivalMs, 0) / done.length;
}

/** Mean e2e per utilization of one cell, colocated and PD. */
function measureCell(
  card: ModelCard,
  reqs: readonly SimRequest[],
  us: readonly number[],
  seed: number,
): { c: number[]; p: number[] } {
  const sat = burstThroughputRps(
    simulate(asBurst(reqs), { card, numInstances: 2, policy: "least-loaded" }).outcomes,
  );
  const c: number[] = [];
  const p: number[] = [];
  us.forEach((u, k) => {
    const rng = mulberry32(seed * 100 + k);
    let t = 0;
    const timed = reqs.map((r) => {
      t += (-Math.log(1 - rng()) / (u * sat)) * 1000;
      return { ...r, arrivalMs: t };
    });
    c.push(Number(meanE2e(timed, card, false).toFixed(1)));
    p.push(Number(meanE2e(timed, card, true).toFixed(1)));
  });
  return { c, p };
}

/** @throws Error when a bucket's request cannot run on the card (context, KV capacity). */
export function measureHeatmap(card: ModelCard, opts: HeatmapOptions): HeatmapResult {
  const { inputBuckets: ins, outputBuckets: outs, utilizations: us } = opts;
  const cells = ins.map((input, i) =>
    outs.map((output, j) => {
      const cell = i * outs.length + j;
      const reqs = cellRequests(input, output, opts.requestsPerCell, cell);
      return measureCell(card, reqs, us, opts.seed * 1000 + cell);
    }),
  );
  const signs = cells.map((row) =>
    row.map((x) => x.c.map((c, k) => Math.sign(c / (x.p[k] as number) - 1))),
  );
  const numStable = signs.flat().filter((s) => s.every((x) => x === s[0])).length;
  const profiles = us.map((_, k) => ({
    model: card.name,
    measuredAt: 0,
    inputBuckets: ins,
    outputBuckets: outs,
    colocatedMs: cells.map((row) => row.map((x) => x.c[k] as number)),
    pdMs: cells.map((row) => row.map((x) => x.p[k] as number)),
  }));
  return { profiles, signs, numStable, numCells: ins.length * outs.length };
}
