/**
 * What sim:serve and sim:sweep share: a trace's rows as simulator requests (real lengths;
 * Mooncake hash ids become fixed 512-token blocks, so equal prefixes share KV blocks), the
 * saturation measurement (shared/sim/load.ts), arrivals for a load level, and running policies on
 * the same arrivals. Node side (reads the trace and the card).
 */
import { readFileSync } from "node:fs";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import { type RequestOutcome, type SimRequest, simulate } from "../shared/sim/cluster.ts";
import { checkModelCard, type ModelCard } from "../shared/sim/cost-model.ts";
import {
  asBurst,
  burstThroughputRps,
  keptUp,
  type RateSearch,
  sustainableRate,
} from "../shared/sim/load.ts";
import { type PolicyReport, report, type Slo } from "../shared/sim/report.ts";
import type { SchedulerPolicy } from "../shared/types/deployments.ts";
import {
  loadTrace,
  MOONCAKE_BLOCK_SIZE,
  poissonArrivals,
  promptTokenIds,
  scaledBlockTokens,
  scaleFactor,
  scaleLengths,
} from "./traces.ts";

export const CARDS_DIR = new URL("./cards/", import.meta.url).pathname;
/** The default card admits every row of the three traces (128K context). */
export const DEFAULT_CARD_PATH = `${CARDS_DIR}llama31-8b-a100.json`;
/** SLOs when neither the flags nor the card give them. */
export const FALLBACK_SLO: Slo = { ttftMs: 10_000, tpotMs: 50 };
/** Token ids of simulated prompts lie in [3, VOCAB): only equality matters (prefix reuse). */
const VOCAB = 32_000;
/** The policy the saturation burst runs under (it ignores prefixes, so it favours no policy). */
export const SATURATION_POLICY: SchedulerPolicy = "least-loaded";

export function readCard(path: string): ModelCard {
  const card = JSON.parse(readFileSync(path, "utf8")) as ModelCard;
  const problem = checkModelCard(card);
  if (problem) throw new Error(`${path}: ${problem}`);
  return card;
}

export interface TraceRequests {
  /** Rows in trace order, with arrival times relative to the first row (unscaled). */
  requests: SimRequest[];
  /** Mean arrival rate of the whole trace, requests per second. */
  traceRps: number;
  numRows: number;
}

/**
 * The first `maxRows` rows of a trace as requests (the trace's own times), or with `spread` (the
 * trace's row count) `maxRows` rows evenly spread over the whole trace. Real lengths,
 * unless `scaleCtx` is given: then scaled into that context exactly as bench:serve scales them
 * (factor min(1, ctx / p99(input + output)), hash blocks of `scaledBlockTokens`), to replay a
 * local run.
 */
export async function traceRequests(
  path: string,
  maxRows: number,
  seed: number,
  scaleCtx: number | null = null,
  spread: number | null = null,
): Promise<TraceRequests> {
  // spread: row i is kept when it starts a new 1/maxRows-th of the trace
  const keep =
    spread === null
      ? (i: number) => i < maxRows
      : (i: number) =>
          Math.floor(((i + 1) * maxRows) / spread) > Math.floor((i * maxRows) / spread);
  const t = await loadTrace(path, keep);
  const t0 = t.rows[0]?.timestampMs ?? 0;
  const factor = scaleCtx === null ? 1 : scaleFactor(t.p99TotalTokens, scaleCtx);
  const blockTokens = scaledBlockTokens(MOONCAKE_BLOCK_SIZE, factor);
  const requests = t.rows.map((r) => {
    const { input, output } =
      scaleCtx === null
        ? { input: r.inputLength, output: r.outputLength }
        : scaleLengths(r.inputLength, r.outputLength, factor, scaleCtx);
    return {
      id: `r${r.rowIndex}`,
      arrivalMs: r.timestampMs - t0,
      promptIds: promptTokenIds(
        { requestIndex: r.rowIndex, inputLength: input, hashIds: r.hashIds },
        {
          blockTokens: scaleCtx === null ? MOONCAKE_BLOCK_SIZE : blockTokens,
          vocab: VOCAB,
          salt: seed,
        },
      ),
      outputTokens: output,
    };
  });
  const traceRps = t.spanMs > 0 ? ((t.numRows - 1) * 1000) / t.spanMs : Number.POSITIVE_INFINITY;
  return { requests, traceRps, numRows: t.numRows };
}

/** The cluster's burst throughput (requests/s) on `requests`, all arriving at time 0. */
export function burstRps(
  requests: readonly SimRequest[],
  card: ModelCard,
  numInstances: number,
): number {
  const r = simulate(asBurst(requests), { card, numInstances, policy: SATURATION_POLICY });
  return burstThroughputRps(r.outcomes);
}

/** Seconds of arrivals a load probe aims at (at the first guess; fewer when rows run out). */
export const PROBE_WINDOW_S = 300;
/** Rows a load probe carries at least (or the whole trace). */
export const PROBE_MIN_ROWS = 1000;

export interface Saturation extends RateSearch {
  /** One instance's burst throughput on the first 200 rows times the instances. */
  guessRps: number;
  /** The probes' rows, evenly spread over the trace's `traceRows`. */
  rows: number;
  traceRows: number;
  wallS: number;
}

/**
 * The cluster's saturation throughput on a trace, measured: the highest Poisson rate at which
 * `numInstances` instances under least-loaded keep up with the arrivals (shared/sim/load.ts,
 * `sustainableRate` to 5%). Each probe replays the same rows, evenly spread over the whole trace
 * (about `PROBE_WINDOW_S` of arrivals at the guess), and stops at its last arrival; with
 * `scaleCtx` their lengths are scaled as the run's are (sim:serve --scale-ctx).
 */
export async function measureSaturation(
  path: string,
  card: ModelCard,
  numInstances: number,
  seed: number,
  scaleCtx: number | null = null,
): Promise<Saturation> {
  const t0 = performance.now();
  const head = await traceRequests(path, 200, seed, scaleCtx);
  const guessRps = numInstances * burstRps(head.requests, card, 1);
  const want = Math.min(
    head.numRows,
    Math.max(PROBE_MIN_ROWS, Math.ceil(guessRps * PROBE_WINDOW_S)),
  );
  const pool = (await traceRequests(path, want, seed, scaleCtx, head.numRows)).requests;
  const keepsUp = (rps: number): boolean => {
    const times = poissonArrivals(rps, seed, Number.POSITIVE_INFINITY, pool.length);
    const requests = times.map((t, i) => ({ ...(pool[i] as SimRequest), arrivalMs: t }));
    const windowMs = times[times.length - 1] as number;
    const r = simulate(requests, {
      card,
      numInstances,
      policy: SATURATION_POLICY,
      stopAtMs: windowMs,
    });
    return keptUp(r.outcomes, windowMs).kept;
  };
  const search = sustainableRate(keepsUp, guessRps);
  const wallS = Number(((performance.now() - t0) / 1000).toFixed(1));
  return { ...search, guessRps, rows: pool.length, traceRows: head.numRows, wallS };
}

/** One line on how a saturation was measured, for stderr. */
export function describeSaturation(s: Saturation): string {
  const probes = s.probes.map((p) => `${p.rps.toFixed(2)}${p.kept ? "+" : "-"}`).join(" ");
  return (
    `saturation ${s.rps.toFixed(3)} req/s (guess ${s.guessRps.toFixed(2)}; probes ${probes}; ` +
    `${s.rows} of ${s.traceRows} rows; ${s.wallS} s)`
  );
}

export type ArrivalMode = "poisson" | "trace";

/**
 * Requests for one load level: Poisson at `rps` carrying the rows in order, or the trace's own
 * times compressed to a mean of `rps`; arrivals in the first `durationMs` only.
 */
export function atRate(
  tr: TraceRequests,
  rps: number,
  mode: ArrivalMode,
  seed: number,
  durationMs: number,
): SimRequest[] {
  if (mode === "poisson") {
    const times = poissonArrivals(rps, seed, durationMs, tr.requests.length);
    return times.map((t, i) => ({ ...(tr.requests[i] as SimRequest), arrivalMs: t }));
  }
  return atTimeScale(tr, rps / tr.traceRps, durationMs);
}

/** The trace's own times divided by `timeScale`; arrivals in the first `durationMs` only. */
export function atTimeScale(
  tr: TraceRequests,
  timeScale: number,
  durationMs: number,
): SimRequest[] {
  return tr.requests
    .map((r) => ({ ...r, arrivalMs: r.arrivalMs / timeScale }))
    .filter((r) => r.arrivalMs < durationMs);
}

export type RunReport = PolicyReport & { steps: number; preemptions: number; sim_s: number };

/** Cluster shape and placement inputs besides the colocated instance count. */
export interface RunOptions {
  /** Prompt tokens per prefix-tree key (DEFAULT_PREFIX_INDEX_TOKENS, as the JobExecutor). */
  prefixIndexTokens?: number;
  pd?: { prefill: number; decode: number };
  profile?: PdProfile | null;
  /** `placementCost`'s interference weight (default DEFAULT_INTERFERENCE). */
  interference?: number;
  /** Called with each policy's per-request outcomes (sim:serve --outcomes). */
  onOutcomes?: (policy: SchedulerPolicy, outcomes: readonly RequestOutcome[]) => void;
}

/** Runs each policy on the same arrivals. */
export function runPolicies(
  requests: readonly SimRequest[],
  card: ModelCard,
  numInstances: number,
  policies: readonly SchedulerPolicy[],
  slo: Slo,
  run: RunOptions = {},
): Record<string, RunReport> {
  const out: Record<string, RunReport> = {};
  for (const policy of policies) {
    const t = performance.now();
    const r = simulate(requests, {
      card,
      numInstances,
      policy,
      prefixIndexTokens: run.prefixIndexTokens,
      pd: run.pd,
      profile: run.profile,
      interference: run.interference,
    });
    run.onOutcomes?.(policy, r.outcomes);
    out[policy] = {
      ...report(r.outcomes, slo, r.busyMs),
      steps: r.numSteps,
      preemptions: r.numPreemptions,
      sim_s: Number(((performance.now() - t) / 1000).toFixed(2)),
    };
  }
  return out;
}
