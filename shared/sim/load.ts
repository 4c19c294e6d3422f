/**
 * Load levels for the simulator. The saturation throughput of a cluster on a trace is measured,
 * not assumed: the trace's first requests all arrive at time 0 (a burst), the cluster serves them
 * with full queues, and the throughput is the completion rate between the 10th and the 90th
 * percentile of finish times, so neither the ramp-up (first batches still in prefill) nor the
 * drain (the last long requests alone on a few instances) counts. `--utilization U` then offers
 * U times that rate. Pure.
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
