/**
 * Load levels for the simulator. The saturation throughput of a cluster on a trace is measured,
 * not assumed: the highest Poisson rate at which completions keep up with arrivals
 * (`sustainableRate` over `keptUp` probes: the backlog of unfinished requests does not grow over
 * the second half of the arrival window by more than `KEEP_UP_TOLERANCE` of that half's
 * arrivals). `--utilization U` then offers U times that rate. A burst (the first requests all
 * at time 0, completion rate between the 10th and 90th percentile finish) gives the first guess
 * of the search; on its own it overstates what a cluster sustains (a burst's batches are full
 * from the start, Poisson arrivals queue behind long prompts). Pure.
 */
import type { RequestOutcome, SimRequest } from "./cluster.ts";

/** Share of completions cut at each end of a burst when measuring its throughput. */
export const BURST_TRIM = 0.1;

/** The requests, all arriving at time 0, in their order. */
export function asBurst(requests: readonly SimRequest[]): SimRequest[] {
  return requests.map((r) => ({ ...r, arrivalMs: 0 }));
}

/**
 * Completions per second of a burst run between its `trim` and `1 - trim` quantiles of finish
 * time (failed requests do not count); when those finish at one instant (the burst ran as one
 * batch), all completions over the last finish time instead. @throws RangeError with fewer than
 * 3 completions, or when everything finished at time 0.
 */
export function burstThroughputRps(outcomes: readonly RequestOutcome[], trim = BURST_TRIM): number {
  const done = outcomes
    .filter((o) => o.failure === null && o.finishMs !== null)
    .map((o) => o.finishMs as number)
    .sort((a, b) => a - b);
  if (done.length < 3) throw new RangeError(`a burst needs 3+ completions, got ${done.length}`);
  const lo = Math.floor(trim * (done.length - 1));
  const hi = Math.ceil((1 - trim) * (done.length - 1));
  const span = (done[hi] as number) - (done[lo] as number);
  if (span > 0) return ((hi - lo) * 1000) / span;
  const last = done[done.length - 1] as number;
  if (!(last > 0)) throw new RangeError("the burst's completions took no time");
  return (done.length * 1000) / last;
}

/** A probe keeps up when its backlog grew by at most this share of its second half's arrivals. */
export const KEEP_UP_TOLERANCE = 0.03;

/** Requests that arrived by `t` ms and had not finished by then (a failure leaves on arrival). */
export function backlogAt(outcomes: readonly RequestOutcome[], t: number): number {
  let n = 0;
  for (const o of outcomes) {
    if (o.arrivalMs > t || o.failure !== null) continue;
    if (o.finishMs === null || o.finishMs > t) n++;
  }
  return n;
}

export interface KeepUp {
  /** Arrivals in the second half of the window. */
  arrivals: number;
  backlogMid: number;
  backlogEnd: number;
  kept: boolean;
}

/**
 * Whether completions kept up with the arrivals of a run over [0, `windowMs`] (run at least that
 * long): the backlog at the window's end exceeds the one at its middle by at most `tolerance` x
 * the arrivals in between. An overloaded cluster's backlog grows by (offered - served) rate x
 * time; a stable one's stays level.
 */
export function keptUp(
  outcomes: readonly RequestOutcome[],
  windowMs: number,
  tolerance = KEEP_UP_TOLERANCE,
): KeepUp {
  const mid = windowMs / 2;
  const arrivals = outcomes.filter((o) => o.arrivalMs > mid && o.arrivalMs <= windowMs).length;
  const backlogMid = backlogAt(outcomes, mid);
  const backlogEnd = backlogAt(outcomes, windowMs);
  return {
    arrivals,
    backlogMid,
    backlogEnd,
    kept: backlogEnd - backlogMid <= tolerance * arrivals,
  };
}

export interface RateSearch {
  /** The highest rate that kept up (requests/s). */
  rps: number;
  /** Every probe, in the order run. */
  probes: { rps: number; kept: boolean }[];
}

/**
 * The highest rate `keepsUp` accepts, to a relative `precision`: from `guess`, steps of 1.5x up
 * (or down) until the answer changes, then geometric bisection. Assumes `keepsUp` is monotone
 * (a cluster that keeps up with a rate keeps up with a lower one). @throws RangeError when no
 * rate down to guess / 1.5^maxSteps keeps up.
 */
export function sustainableRate(
  keepsUp: (rps: number) => boolean,
  guess: number,
  precision = 0.05,
  maxSteps = 12,
): RateSearch {
  if (!(guess > 0)) throw new RangeError(`a rate search needs a positive guess, got ${guess}`);
  const probes: RateSearch["probes"] = [];
  const probe = (rps: number): boolean => {
    const kept = keepsUp(rps);
    probes.push({ rps, kept });
    return kept;
  };
  let lo: number;
  let hi: number;
  if (probe(guess)) {
    lo = guess;
    hi = guess * 1.5;
    for (let i = 0; probe(hi); i++) {
      if (i >= maxSteps) return { rps: hi, probes };
      lo = hi;
      hi *= 1.5;
    }
  } else {
    hi = guess;
    lo = guess / 1.5;
    for (let i = 0; !probe(lo); i++) {
      if (i >= maxSteps) throw new RangeError(`no rate down to ${lo} req/s keeps up`);
      hi = lo;
      lo /= 1.5;
    }
  }
  while (hi / lo > 1 + precision) {
    const mid = Math.sqrt(lo * hi);
    if (probe(mid)) lo = mid;
    else hi = mid;
  }
  return { rps: lo, probes };
}
