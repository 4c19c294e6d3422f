/**
 * What sim:serve and sim:sweep share: a trace's rows as simulator requests (real lengths;
 * Mooncake hash ids become fixed 512-token blocks, so equal prefixes share KV blocks), the
 * saturation measurement (shared/sim/load.ts), arrivals for a load level, and running policies on
 * the same arrivals. Node side (reads the trace and the card).
 */
import { readFileSync } from "node:fs";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import { type SimRequest, simulate } from "../shared/sim/cluster.ts";
import { checkModelCard, type ModelCard } from "../shared/sim/cost-model.ts";
import { asBurst, burstThroughputRps } from "../shared/sim/load.ts";
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
 * The first `maxRows` rows of a trace as requests (the trace's own times). Real lengths, unless
 * `scaleCtx` is given: then scaled into that context exactly as bench:serve scales them (factor
 * min(1, ctx / p99(input + output)), hash blocks of `scaledBlockTokens`), to replay a local run.
 */
export async function traceRequests(
  path: string,
  maxRows: number,
  seed: number,
  scaleCtx: number | null = null,
): Promise<TraceRequests> {
  const t = await loadTrace(path, (i) => i < maxRows);
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

/**
 * Rows used to measure saturation: three full batches per instance, a batch being what the KV
 * cache holds of requests of the sample's mean length (`meanTokens`, prompt + output), at most
 * `maxNumSeqs`; at least 200 rows.
 */
export function saturationSampleSize(
  numInstances: number,
  card: ModelCard,
  meanTokens: number,
): number {
  const batch = Math.max(
    1,
    Math.min(card.maxNumSeqs, Math.floor(card.kvCapacityTokens / meanTokens)),
  );
  return Math.max(200, 3 * numInstances * batch);
}

/** Mean prompt + output tokens of requests. */
export function meanTokens(requests: readonly SimRequest[]): number {
  const total = requests.reduce((a, r) => a + r.promptIds.length + r.outputTokens, 0);
  return total / Math.max(1, requests.length);
}

/** The cluster's saturation throughput (requests/s) on the first rows of the trace. */
export function measureSaturation(
  requests: readonly SimRequest[],
  card: ModelCard,
  numInstances: number,
): number {
  const r = simulate(asBurst(requests), { card, numInstances, policy: SATURATION_POLICY });
  return burstThroughputRps(r.outcomes);
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
    out[policy] = {
      ...report(r.outcomes, slo, r.busyMs),
      steps: r.numSteps,
      preemptions: r.numPreemptions,
      sim_s: Number(((performance.now() - t) / 1000).toFixed(2)),
    };
  }
  return out;
}
