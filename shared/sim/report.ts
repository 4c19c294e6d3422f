/**
 * A simulation's numbers, with the definitions bench/serve.ts uses for a measured run: TTFT =
 * first token - arrival; TPOT = (finish - first token) / (output tokens - 1) for outputs of 2+
 * tokens; e2e = finish - arrival; throughput = output tokens of completed requests per second of
 * makespan (first arrival to last finish); goodput = completed requests with TTFT <= the TTFT SLO
 * and TPOT <= the TPOT SLO per second of makespan; cache hit rate = prompt tokens served from
 * the prefix cache at admission / prompt tokens, over completed requests; load imbalance = the
 * busiest instance's busy time / the mean busy time (1 = even; N = one instance did everything).
 * Pure.
 */
import type { RequestOutcome } from "./cluster.ts";

export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

export interface PolicyReport {
  goodput_rps: number;
  throughput_tokens_per_s: number;
  ttft_ms: Percentiles;
  tpot_ms: Percentiles;
  e2e_ms: Percentiles;
  cache_hit_rate: number;
  load_imbalance: number;
  completed: number;
  failed: number;
  failure_reasons: Record<string, number>;
  makespan_s: number;
}

export interface Slo {
  ttftMs: number;
  tpotMs: number;
}

/** The p-th percentile (0..100) of ascending values, linearly interpolated (numpy's default). */
export function percentileSorted(sorted: readonly number[], p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (n - 1);
  const lo = Math.floor(rank);
  const a = sorted[lo] as number;
  const b = sorted[Math.min(n - 1, lo + 1)] as number;
  return a + (b - a) * (rank - lo);
}

/** The median of `values` (the mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  return percentileSorted(
    [...values].sort((a, b) => a - b),
    50,
  );
}

function summarize(values: number[], digits: number): Percentiles {
  if (values.length === 0) return { p50: null, p90: null, p99: null };
  const s = [...values].sort((a, b) => a - b);
  const r = (p: number) => round(percentileSorted(s, p), digits);
  return { p50: r(50), p90: r(90), p99: r(99) };
}

function round(x: number, digits: number): number {
  return Number(x.toFixed(digits));
}

export function tpotMs(o: RequestOutcome): number | null {
  if (o.firstTokenMs === null || o.finishMs === null || o.numOutputTokens < 2) return null;
  return (o.finishMs - o.firstTokenMs) / (o.numOutputTokens - 1);
}

/** max / mean of per-instance busy time; 1 when nothing ran. */
export function loadImbalance(busyMs: readonly number[]): number {
  const mean = busyMs.reduce((a, b) => a + b, 0) / Math.max(1, busyMs.length);
  return mean > 0 ? round(Math.max(...busyMs) / mean, 3) : 1;
}

export function report(
  outcomes: readonly RequestOutcome[],
  slo: Slo,
  busyMs: readonly number[] = [],
): PolicyReport {
  const done = outcomes.filter((o) => o.failure === null && o.finishMs !== null);
  const failureReasons: Record<string, number> = {};
  for (const o of outcomes) {
    if (o.failure !== null) failureReasons[o.failure] = (failureReasons[o.failure] ?? 0) + 1;
  }
  const start = Math.min(...outcomes.map((o) => o.arrivalMs));
  const end = Math.max(start, ...done.map((o) => o.finishMs as number));
  const makespanS = (end - start) / 1000;
  const ttft = done.map((o) => (o.firstTokenMs as number) - o.arrivalMs);
  const tpot = done.flatMap((o) => {
    const t = tpotMs(o);
    return t === null ? [] : [t];
  });
  const met = done.filter((o) => {
    const t = tpotMs(o);
    return (
      (o.firstTokenMs as number) - o.arrivalMs <= slo.ttftMs && (t === null || t <= slo.tpotMs)
    );
  }).length;
  const tokens = done.reduce((s, o) => s + o.numOutputTokens, 0);
  const prompt = done.reduce((s, o) => s + o.numPromptTokens, 0);
  const cached = done.reduce((s, o) => s + o.numCachedTokens, 0);
  const perS = (x: number) => (makespanS > 0 ? round(x / makespanS, 3) : 0);
  return {
    goodput_rps: perS(met),
    throughput_tokens_per_s: perS(tokens),
    ttft_ms: summarize(ttft, 1),
    tpot_ms: summarize(tpot, 2),
    e2e_ms: summarize(
      done.map((o) => (o.finishMs as number) - o.arrivalMs),
      1,
    ),
    cache_hit_rate: prompt > 0 ? round(cached / prompt, 4) : 0,
    load_imbalance: loadImbalance(busyMs),
    completed: done.length,
    failed: outcomes.length - done.length,
    failure_reasons: failureReasons,
    makespan_s: round(makespanS, 3),
  };
}
