/**
 * Load sweeps with the cluster simulator: for each trace and cluster size, measures the
 * saturation throughput once (shared/sim/load.ts), then runs every policy on the same Poisson
 * arrivals at each utilization, and writes all reports to one JSON file (default
 * docs/sim/sweep.json, rewritten after every point) that scripts/plot-sim.ts turns into curves.
 *
 *   npm run -s sim:sweep -- [--full] [--traces P1,P2] [--instances 8,16] [--loads 0.5,0.7]
 *     [--duration S] [--policies P1,P2] [--card PATH] [--seed N] [--out PATH]
 *
 * Default: 8 instances, utilizations 0.5/0.7/0.9, 120 s of arrivals per point, the three traces
 * in ../shared/traces. `--full`: 8, 16 and 64 instances, utilizations 0.3 to 1.2, 300 s (long:
 * tens of minutes). `--policies` runs a subset (default: every policy). Prints one line per point
 * to stderr and a summary JSON line last.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { SCHEDULER_POLICIES, type SchedulerPolicy } from "../shared/types/deployments.ts";
import {
  atRate,
  DEFAULT_CARD_PATH,
  FALLBACK_SLO,
  meanTokens,
  measureSaturation,
  type RunReport,
  readCard,
  runPolicies,
  saturationSampleSize,
  traceRequests,
} from "./sim-run.ts";

const TRACES = [
  "../shared/traces/mooncake-conversation.jsonl",
  "../shared/traces/azure-llm-2023-conv.csv",
  "../shared/traces/azure-llm-2023-code.csv",
];

const { values } = parseArgs({
  options: {
    full: { type: "boolean", default: false },
    traces: { type: "string" },
    instances: { type: "string" },
    loads: { type: "string" },
    duration: { type: "string" },
    card: { type: "string" },
    policies: { type: "string" },
    seed: { type: "string", default: "1" },
    out: { type: "string", default: "docs/sim/sweep.json" },
  },
});

function numbers(s: string): number[] {
  const xs = s.split(",").map(Number);
  if (xs.some((x) => !(x > 0) || !Number.isFinite(x))) {
    console.error(`sim:sweep: expected positive numbers, got ${s}`);
    process.exit(2);
  }
  return xs;
}

const full = values.full;
const traces = values.traces ? values.traces.split(",") : TRACES;
const sizes = numbers(values.instances ?? (full ? "8,16,64" : "8"));
const loads = numbers(values.loads ?? (full ? "0.3,0.5,0.7,0.9,1.2" : "0.5,0.7,0.9"));
const durationMs = numbers(values.duration ?? (full ? "300" : "120"))[0]! * 1000;
const policies = values.policies
  ? (values.policies.split(",") as SchedulerPolicy[])
  : [...SCHEDULER_POLICIES];
const unknown = policies.filter((p) => !SCHEDULER_POLICIES.includes(p));
if (unknown.length > 0) {
  console.error(`sim:sweep: unknown policies ${unknown.join(",")}`);
  process.exit(2);
}
const seed = Number(values.seed);
const cardPath = values.card ?? DEFAULT_CARD_PATH;
const card = readCard(cardPath);
const slo = {
  ttftMs: card.sloTtftMs ?? FALLBACK_SLO.ttftMs,
  tpotMs: card.sloTpotMs ?? FALLBACK_SLO.tpotMs,
};

export interface SweepPoint {
  trace: string;
  instances: number;
  saturation_rps: number;
  utilization: number;
  rate: number;
  requests: number;
  policies: Record<string, RunReport>;
}

const points: SweepPoint[] = [];
const t0 = performance.now();
const config = {
  card: card.name,
  slo_ttft_ms: slo.ttftMs,
  slo_tpot_ms: slo.tpotMs,
  duration_s: durationMs / 1000,
  seed,
  arrivals: "poisson",
};
/** Rewrites the output after every point, so a long sweep stopped midway keeps what it ran. */
function save(): void {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify({ config, points }, null, 2)}\n`);
}
for (const path of traces) {
  const name = path.split("/").pop() as string;
  for (const n of sizes) {
    const first = await traceRequests(path, 200, seed);
    const sample = saturationSampleSize(n, card, meanTokens(first.requests));
    const sat = measureSaturation((await traceRequests(path, sample, seed)).requests, card, n);
    for (const u of loads) {
      const rate = u * sat;
      const tr = await traceRequests(path, Math.ceil(rate * (durationMs / 1000) * 1.2) + 50, seed);
      const requests = atRate(tr, rate, "poisson", seed, durationMs);
      const reports = runPolicies(requests, card, n, policies, slo);
      const point = {
        trace: name,
        instances: n,
        saturation_rps: Number(sat.toFixed(4)),
        utilization: u,
        rate: Number(rate.toFixed(4)),
        requests: requests.length,
        policies: reports,
      };
      points.push(point);
      save();
      const good = Object.entries(reports).map(([p, r]) => `${p}=${r.goodput_rps}`);
      console.error(`${name} n=${n} u=${u} rate=${rate.toFixed(2)}: ${good.join(" ")}`);
    }
  }
}
save();
console.log(
  JSON.stringify({
    out: values.out,
    points: points.length,
    wall_s: Number(((performance.now() - t0) / 1000).toFixed(1)),
  }),
);
