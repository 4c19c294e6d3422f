/**
 * Cluster simulator CLI: replays a trace (Azure CSV or Mooncake JSONL) against N simulated
 * colocated instances that run the project's own scheduler, KV block manager and placement policy
 * (shared/sim/cluster.ts), with step times from a model card (shared/sim/cost-model.ts).
 *
 *   npm run -s sim:serve -- --trace PATH --instances N --policy deepflow|round-robin|least-loaded|all
 *     [--rate R | --time-scale X] [--duration S] [--slo-ttft-ms A] [--slo-tpot-ms B]
 *     [--card PATH] [--seed N] [--json]
 *
 * Lengths are the trace's own, unscaled: Mooncake hash ids become fixed 512-token blocks of token
 * ids (bench/traces.ts's mapping with blockTokens = 512), so equal hash-id prefixes share KV
 * blocks; Azure rows get request-unique prompts of their length. Arrivals: with --rate, seeded
 * Poisson at R per second carrying the trace's rows in order; otherwise the trace's times divided
 * by --time-scale. Only arrivals in the first --duration seconds are replayed; every request
 * then runs to its end. `--policy all` runs each policy on the same arrivals. Prints one JSON
 * object on its last line.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type SimRequest, simulate } from "../shared/sim/cluster.ts";
import { checkModelCard, type ModelCard } from "../shared/sim/cost-model.ts";
import { type PolicyReport, report } from "../shared/sim/report.ts";
import type { SchedulerPolicy } from "../shared/types/deployments.ts";
import { loadTrace, MOONCAKE_BLOCK_SIZE, poissonArrivals, promptTokenIds } from "./traces.ts";

export const DEFAULT_CARD_PATH = new URL("./cards/default-moe-cpu.json", import.meta.url).pathname;
const POLICIES: SchedulerPolicy[] = ["deepflow", "round-robin", "least-loaded"];
/** Token ids of simulated prompts lie in [3, VOCAB): only equality matters (prefix reuse). */
const VOCAB = 32_000;

const { values } = parseArgs({
  options: {
    trace: { type: "string" },
    instances: { type: "string", default: "8" },
    policy: { type: "string", default: "all" },
    rate: { type: "string" },
    "time-scale": { type: "string", default: "1" },
    duration: { type: "string", default: "300" },
    "slo-ttft-ms": { type: "string", default: "10000" },
    "slo-tpot-ms": { type: "string", default: "50" },
    card: { type: "string" },
    seed: { type: "string", default: "1" },
    json: { type: "boolean", default: false },
  },
});

function fail(msg: string): never {
  console.error(`sim:serve: ${msg}`);
  process.exit(2);
}
function positive(name: string, v: string): number {
  const x = Number(v);
  if (!(x > 0) || !Number.isFinite(x)) fail(`--${name} must be a positive number, got ${v}`);
  return x;
}

if (!values.trace) fail("--trace PATH is required");
const numInstances = positive("instances", values.instances);
if (!Number.isInteger(numInstances)) fail("--instances must be an integer");
const policies: SchedulerPolicy[] =
  values.policy === "all"
    ? POLICIES
    : POLICIES.includes(values.policy as SchedulerPolicy)
      ? [values.policy as SchedulerPolicy]
      : fail(`unknown --policy ${values.policy} (deepflow, round-robin, least-loaded or all)`);
const rate = values.rate === undefined ? null : positive("rate", values.rate);
const timeScale = positive("time-scale", values["time-scale"]);
const durationMs = positive("duration", values.duration) * 1000;
const slo = {
  ttftMs: positive("slo-ttft-ms", values["slo-ttft-ms"]),
  tpotMs: positive("slo-tpot-ms", values["slo-tpot-ms"]),
};
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) fail("--seed must be a non-negative integer");
const cardPath = values.card ?? DEFAULT_CARD_PATH;
const card = JSON.parse(readFileSync(cardPath, "utf8")) as ModelCard;
const problem = checkModelCard(card);
if (problem) fail(`${cardPath}: ${problem}`);

const arrivals = rate === null ? null : poissonArrivals(rate, seed, durationMs);
const trace = await loadTrace(values.trace, (i, relMs) =>
  arrivals ? i < arrivals.length : relMs / timeScale < durationMs,
);
const t0 = trace.rows[0]?.timestampMs ?? 0;
const requests: SimRequest[] = trace.rows.map((r, i) => ({
  id: `r${r.rowIndex}`,
  arrivalMs: arrivals ? (arrivals[i] as number) : (r.timestampMs - t0) / timeScale,
  promptIds: promptTokenIds(
    { requestIndex: r.rowIndex, inputLength: r.inputLength, hashIds: r.hashIds },
    { blockTokens: MOONCAKE_BLOCK_SIZE, vocab: VOCAB, salt: seed },
  ),
  outputTokens: r.outputLength,
}));
if (requests.length === 0) fail("no requests fall in the replay window (try --duration)");
if (arrivals && requests.length < arrivals.length) {
  console.error(
    `note: the trace has ${requests.length} rows, fewer than ${arrivals.length} arrivals`,
  );
}

const out: Record<string, PolicyReport & { steps: number; preemptions: number }> = {};
for (const policy of policies) {
  const t = performance.now();
  const r = simulate(requests, { card, numInstances, policy });
  out[policy] = { ...report(r.outcomes, slo), steps: r.numSteps, preemptions: r.numPreemptions };
  console.error(`${policy}: simulated in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  if (!values.json) console.log(policy, out[policy]);
}
const config = {
  trace: values.trace.split("/").pop(),
  requests: requests.length,
  instances: numInstances,
  rate,
  time_scale: rate === null ? timeScale : null,
  duration_s: durationMs / 1000,
  seed,
  slo_ttft_ms: slo.ttftMs,
  slo_tpot_ms: slo.tpotMs,
  card: card.name,
};
console.log(JSON.stringify({ policies: out, config }));
