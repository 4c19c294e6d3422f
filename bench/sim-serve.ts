/**
 * Cluster simulator CLI: replays a trace (Azure CSV or Mooncake JSONL) against N simulated
 * colocated instances that run the project's own scheduler, KV block manager and placement policy
 * (shared/sim/cluster.ts), with step times from a model card (shared/sim/cost-model.ts).
 *
 *   npm run -s sim:serve -- --trace PATH --instances N --policy NAME[,NAME...]|all
 *     [--utilization U | --rate R | --time-scale X] [--arrivals poisson|trace] [--duration S]
 *     [--slo-ttft-ms A] [--slo-tpot-ms B] [--card PATH] [--seed N] [--prefix-index-tokens T]
 *     [--interference G] [--scale-ctx N] [--pd P:D [--profile HEATMAP.json]] [--outcomes PATH]
 *     [--json]
 *
 * Lengths are the trace's own, unscaled. Load: `--utilization U` measures the cluster's
 * saturation throughput on the trace (the highest Poisson rate whose backlog stays level, found
 * by bisection: shared/sim/load.ts, `measureSaturation`; printed) and offers U times it; `--rate R` offers R requests/s; both use seeded Poisson arrivals
 * carrying the rows in order, or with `--arrivals trace` the trace's own times compressed to that
 * mean rate. Without either, the trace's times divided by `--time-scale` (default 1). Only
 * arrivals in the first `--duration` seconds are replayed (`--duration whole`: every row of the
 * trace); every request then runs to its end.
 * SLOs default to the card's. The prefix tree keys a prompt every T tokens, a multiple of the
 * card's block size (default: PREFIX_INDEX_TOKENS's default, 512, as the JobExecutor);
 * `--interference G` sets deepflow's interference weight (`placementCost`; 0: without it).
 * `--scale-ctx N` scales lengths into N tokens as bench:serve's `--ctx` does, to put a simulated
 * run next to a measured one. `--pd P:D` adds a PD deployment of P prefill and
 * D decode instances (the card must give its fabric), `--profile` the heatmap that chooses
 * between the groups (without it, the default heatmap on the card, as the JobExecutor derives
 * one for a model nobody profiled: shared/serving/default-heatmap.ts). `--outcomes PATH` writes
 * every request's outcome, one JSON line each with its policy (for `sim:breakdown`). Prints one
 * JSON object on its last line.
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { cardPdProfile } from "../shared/serving/default-heatmap.ts";
import { checkPdProfile, type PdProfile } from "../shared/serving/pd-profile.ts";
import { DEFAULT_PREFIX_INDEX_TOKENS } from "../shared/serving/prefix-tree.ts";
import { DEFAULT_INTERFERENCE } from "../shared/serving/scheduling.ts";
import { SCHEDULER_POLICIES, type SchedulerPolicy } from "../shared/types/deployments.ts";
import {
  type ArrivalMode,
  atRate,
  atTimeScale,
  DEFAULT_CARD_PATH,
  describeSaturation,
  FALLBACK_SLO,
  measureSaturation,
  readCard,
  runPolicies,
  traceRequests,
} from "./sim-run.ts";

const { values } = parseArgs({
  options: {
    trace: { type: "string" },
    instances: { type: "string", default: "8" },
    policy: { type: "string", default: "all" },
    utilization: { type: "string" },
    rate: { type: "string" },
    "time-scale": { type: "string" },
    arrivals: { type: "string", default: "poisson" },
    duration: { type: "string", default: "300" },
    "slo-ttft-ms": { type: "string" },
    "slo-tpot-ms": { type: "string" },
    card: { type: "string" },
    seed: { type: "string", default: "1" },
    "prefix-index-tokens": { type: "string", default: `${DEFAULT_PREFIX_INDEX_TOKENS}` },
    interference: { type: "string", default: `${DEFAULT_INTERFERENCE}` },
    "scale-ctx": { type: "string" },
    pd: { type: "string" },
    profile: { type: "string" },
    outcomes: { type: "string" },
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
function isPolicy(p: string): p is SchedulerPolicy {
  return (SCHEDULER_POLICIES as readonly string[]).includes(p);
}

if (!values.trace) fail("--trace PATH is required");
const tracePath = values.trace;
const numInstances = positive("instances", values.instances);
if (!Number.isInteger(numInstances)) fail("--instances must be an integer");
const policies: SchedulerPolicy[] =
  values.policy === "all"
    ? [...SCHEDULER_POLICIES]
    : values.policy
        .split(",")
        .map((p) =>
          isPolicy(p) ? p : fail(`unknown policy ${p} (${SCHEDULER_POLICIES.join(", ")} or all)`),
        );
const loadFlags = ["utilization", "rate", "time-scale"] as const;
if (loadFlags.filter((f) => values[f] !== undefined).length > 1) {
  fail("give at most one of --utilization, --rate and --time-scale");
}
if (values.arrivals !== "poisson" && values.arrivals !== "trace") {
  fail(`--arrivals must be poisson or trace, got ${values.arrivals}`);
}
const arrivalMode: ArrivalMode = values.arrivals;
// "whole": every row of the trace (at a rate: Poisson arrivals until the rows run out)
const durationMs =
  values.duration === "whole"
    ? Number.POSITIVE_INFINITY
    : positive("duration", values.duration) * 1000;
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) fail("--seed must be a non-negative integer");
const cardPath = values.card ?? DEFAULT_CARD_PATH;
let card: ReturnType<typeof readCard>;
try {
  card = readCard(cardPath);
} catch (e) {
  fail((e as Error).message);
}
const slo = {
  ttftMs: positive(
    "slo-ttft-ms",
    values["slo-ttft-ms"] ?? `${card.sloTtftMs ?? FALLBACK_SLO.ttftMs}`,
  ),
  tpotMs: positive(
    "slo-tpot-ms",
    values["slo-tpot-ms"] ?? `${card.sloTpotMs ?? FALLBACK_SLO.tpotMs}`,
  ),
};

const scaleCtx =
  values["scale-ctx"] === undefined ? null : positive("scale-ctx", values["scale-ctx"]);
let rps: number | null = values.rate === undefined ? null : positive("rate", values.rate);
let saturationRps: number | null = null;
if (values.utilization !== undefined) {
  const u = positive("utilization", values.utilization);
  const sat = await measureSaturation(tracePath, card, numInstances, seed, scaleCtx);
  saturationRps = sat.rps;
  rps = u * saturationRps;
  console.error(`${describeSaturation(sat)}; offering ${u} x = ${rps.toFixed(3)} req/s`);
}
// enough rows for the window: the expected Poisson count with 20% headroom, else all of them
const rowsWanted =
  rps === null ? Number.POSITIVE_INFINITY : Math.ceil(rps * (durationMs / 1000) * 1.2) + 50;
const tr = await traceRequests(tracePath, rowsWanted, seed, scaleCtx);
const timeScale =
  values["time-scale"] === undefined ? 1 : positive("time-scale", values["time-scale"]);
const requests =
  rps === null
    ? atTimeScale(tr, timeScale, durationMs)
    : atRate(tr, rps, arrivalMode, seed, durationMs);
if (requests.length === 0) fail("no requests fall in the replay window (try --duration)");
const lastArrival = requests[requests.length - 1]?.arrivalMs ?? 0;
if (rps !== null && Number.isFinite(durationMs) && lastArrival < 0.9 * durationMs) {
  console.error(
    `note: the trace's ${tr.numRows} rows end ${(lastArrival / 1000).toFixed(0)} s into the window`,
  );
}

const prefixIndexTokens = positive("prefix-index-tokens", values["prefix-index-tokens"]);
if (!Number.isInteger(prefixIndexTokens) || prefixIndexTokens % card.blockSize !== 0) {
  fail(`--prefix-index-tokens must be a multiple of the card's block size ${card.blockSize}`);
}
const interference = Number(values.interference);
if (!(interference >= 0)) fail(`--interference must be a number >= 0, got ${values.interference}`);
let pd: { prefill: number; decode: number } | undefined;
if (values.pd !== undefined) {
  const m = /^(\d+):(\d+)$/.exec(values.pd);
  if (!m || Number(m[1]) < 1 || Number(m[2]) < 1)
    fail(`--pd must be P:D (both >= 1), got ${values.pd}`);
  pd = { prefill: Number(m[1]), decode: Number(m[2]) };
  if (card.kvBytesPerToken === undefined || card.fabricGBps === undefined) {
    fail(`--pd needs a card with kvBytesPerToken and fabricGBps (${cardPath} has none)`);
  }
}
let profile: PdProfile | null = null;
if (values.profile !== undefined) {
  profile = JSON.parse(readFileSync(values.profile, "utf8")) as PdProfile;
  const problem = checkPdProfile(profile);
  if (problem) fail(`${values.profile}: ${problem}`);
} else if (pd) {
  // no heatmap given: the default one on this card, as the JobExecutor derives for a model nobody
  // profiled (shared/serving/default-heatmap.ts)
  profile = cardPdProfile(card.name, card);
}
const outcomesPath = values.outcomes;
if (outcomesPath !== undefined) writeFileSync(outcomesPath, "");
const out = runPolicies(requests, card, numInstances, policies, slo, {
  prefixIndexTokens,
  pd,
  profile,
  interference,
  onOutcomes: outcomesPath
    ? (policy, outcomes) =>
        appendFileSync(
          outcomesPath,
          outcomes.map((o) => `${JSON.stringify({ policy, ...o })}\n`).join(""),
        )
    : undefined,
});
for (const [name, r] of Object.entries(out)) {
  console.error(`${name}: simulated in ${r.sim_s} s`);
  if (!values.json) console.log(name, r);
}
const config = {
  trace: tracePath.split("/").pop(),
  requests: requests.length,
  instances: numInstances,
  saturation_rps: saturationRps === null ? null : Number(saturationRps.toFixed(4)),
  utilization: values.utilization === undefined ? null : Number(values.utilization),
  rate: rps === null ? null : Number(rps.toFixed(4)),
  arrivals: rps === null ? "trace" : arrivalMode,
  time_scale: rps === null ? timeScale : null,
  duration_s: Number.isFinite(durationMs) ? durationMs / 1000 : "whole",
  last_arrival_s: Number((lastArrival / 1000).toFixed(1)),
  seed,
  slo_ttft_ms: slo.ttftMs,
  slo_tpot_ms: slo.tpotMs,
  card: card.name,
  prefix_index_tokens: prefixIndexTokens,
  interference,
  scale_ctx: scaleCtx,
  pd: pd ?? null,
  profile: values.profile ?? (pd ? "default-heatmap" : null),
};
console.log(JSON.stringify({ policies: out, config }));
