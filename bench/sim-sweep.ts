/**
 * Load sweeps with the cluster simulator: for each trace and cluster size, measures the
 * saturation throughput once (the highest Poisson rate the cluster keeps up with: bench/sim-run.ts
 * `measureSaturation`), then runs every policy on the same Poisson arrivals at each utilization,
 * and writes all reports to one JSON file (default docs/sim/sweep.json, rewritten after every
 * point) that scripts/plot-sim.ts turns into curves.
 *
 *   npm run -s sim:sweep -- [--full] [--traces P1,P2] [--instances 8,16] [--loads 0.5,0.7]
 *     [--duration S|whole] [--policies P1,P2] [--card PATH] [--seed N] [--out PATH]
 *     [--saturation-only] [--saturation-rps R]
 *
 * Default: 8 instances, utilizations 0.5/0.7/0.9, 120 s of arrivals per point, the three traces
 * in ../shared/traces. `--full`: 16 and 64 instances, utilizations 0.3 to 1.1, every row of each
 * trace (`--duration whole`: Poisson arrivals carrying all rows in order; long). `--policies` runs
 * a subset (default: every policy). `--saturation-only` measures and records the saturations
 * and runs no load point; `--saturation-rps R` takes R as the saturation instead of measuring it
 * (one trace and size: to continue a sweep with its printed figure). Prints one line per point to
 * stderr and a summary JSON line last.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { parseArgs } from "node:util";
import { SCHEDULER_POLICIES, type SchedulerPolicy } from "../shared/types/deployments.ts";
import {
  atRate,
  DEFAULT_CARD_PATH,
  describeSaturation,
  FALLBACK_SLO,
  measureSaturation,
  type RunReport,
  readCard,
  runPolicies,
  type Saturation,
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
    "saturation-only": { type: "boolean", default: false },
    "saturation-rps": { type: "string" },
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
const sizes = numbers(values.instances ?? (full ? "16,64" : "8"));
const loads = numbers(values.loads ?? (full ? "0.3,0.5,0.7,0.9,1.1" : "0.5,0.7,0.9"));
const duration = values.duration ?? (full ? "whole" : "120");
const durationMs = duration === "whole" ? Number.POSITIVE_INFINITY : numbers(duration)[0]! * 1000;
const policies = values.policies
  ? (values.policies.split(",") as SchedulerPolicy[])
  : [...SCHEDULER_POLICIES];
const unknown = policies.filter((p) => !SCHEDULER_POLICIES.includes(p));
if (unknown.length > 0) {
  console.error(`sim:sweep: unknown policies ${unknown.join(",")}`);
  process.exit(2);
}
if (values["saturation-rps"] !== undefined && traces.length * sizes.length > 1) {
  console.error("sim:sweep: --saturation-rps needs one trace and one cluster size");
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
  /** Seconds from the first to the last arrival. */
  arrivals_s: number;
  policies: Record<string, RunReport>;
}

export interface SweepSaturation {
  trace: string;
  instances: number;
  saturation: Saturation;
}

const points: SweepPoint[] = [];
const saturations: SweepSaturation[] = [];
const t0 = performance.now();
const config = {
  card: card.name,
  slo_ttft_ms: slo.ttftMs,
  slo_tpot_ms: slo.tpotMs,
  duration_s: Number.isFinite(durationMs) ? durationMs / 1000 : "whole",
  seed,
  arrivals: "poisson",
};
/** Rewrites the output after every point, so a long sweep stopped midway keeps what it ran. */
function save(): void {
  mkdirSync(dirname(values.out), { recursive: true });
  writeFileSync(values.out, `${JSON.stringify({ config, saturations, points }, null, 2)}\n`);
}
for (const path of traces) {
  const name = path.split("/").pop() as string;
  for (const n of sizes) {
    let sat: number;
    if (values["saturation-rps"] !== undefined) {
      sat = numbers(values["saturation-rps"])[0] as number;
    } else {
      const measured = await measureSaturation(path, card, n, seed);
      saturations.push({ trace: name, instances: n, saturation: measured });
      save();
      console.error(`${name} n=${n}: ${describeSaturation(measured)}`);
      sat = measured.rps;
    }
    if (values["saturation-only"]) continue;
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
        arrivals_s: Number((((requests.at(-1)?.arrivalMs ?? 0) as number) / 1000).toFixed(1)),
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
