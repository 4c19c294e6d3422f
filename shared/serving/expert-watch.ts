/**
 * The failover watch over a moe-attention instance's expert ranks (xDeepServe's heartbeats, for
 * EP ranks): while a group step is in flight, attention rank 0 asks every live expert rank for its
 * progress every EXPERT_PROBE_MS and decides, per rank:
 *
 * - reset: the rank answers but holds no experts (it came back empty after a reset);
 * - failed: a (layer, step) serve threw since the last look (`numFailed` grew);
 * - hung: it has a (layer, step) whose parts are all in and whose experts have not run
 *   (`hasWork`), and its progress counter `numServed` has not moved for `hungAfterMs` (its step
 *   handling awaits something that never resolves while the object still answers);
 * - unreachable: its health call has failed or timed out for `lostAfterMs`.
 *
 * A verdict triggers a failover (shared/serving/expert-failover.ts). The thresholds sit well under
 * the 30 s exchange timeout (MOE_EXCHANGE_TIMEOUT_MS), which stays the bound for what the watch
 * cannot see (a rank that drops its parts). Pure: observations in, verdicts out.
 */
import type { ExpertRankHealth } from "../moe/expert-rank.ts";

export interface ExpertWatchOptions {
  /** Probe interval while a group step is in flight. */
  probeMs: number;
  /** No progress with work for this long: hung. */
  hungAfterMs: number;
  /** No answer for this long: unreachable. */
  lostAfterMs: number;
}

export const DEFAULT_EXPERT_WATCH: ExpertWatchOptions = {
  probeMs: 250,
  hungAfterMs: 2_000,
  lostAfterMs: 1_000,
};

/** One rank's answer: its health, "empty" (it holds no experts), or null (no answer). */
export type ExpertObservation = ExpertRankHealth | "empty" | null;

interface RankWatch {
  numServed: number;
  progressAt: number;
  numFailed: number;
  unreachableSince: number | null;
}

export class ExpertWatch {
  readonly #ranks = new Map<number, RankWatch>();

  constructor(readonly opts: ExpertWatchOptions = DEFAULT_EXPERT_WATCH) {}

  /** One probe round: the ranks to fail over, with why. Forgets ranks no longer observed. */
  check(observations: Map<number, ExpertObservation>, now: number): Map<number, string> {
    const failed = new Map<number, string>();
    for (const [rank, o] of observations) {
      const reason = this.#observe(rank, o, now);
      if (reason !== null) {
        failed.set(rank, reason);
        this.#ranks.delete(rank);
      }
    }
    for (const rank of this.#ranks.keys()) if (!observations.has(rank)) this.#ranks.delete(rank);
    return failed;
  }

  #observe(rank: number, o: ExpertObservation, now: number): string | null {
    const prev = this.#ranks.get(rank);
    if (o === "empty") return `expert rank ${rank} lost its experts (it was reset)`;
    if (o === null) {
      const since = prev?.unreachableSince ?? now;
      this.#ranks.set(rank, {
        numServed: prev?.numServed ?? -1,
        progressAt: prev?.progressAt ?? now,
        numFailed: prev?.numFailed ?? 0,
        unreachableSince: since,
      });
      return now - since >= this.opts.lostAfterMs
        ? `expert rank ${rank} unreachable: no answer for ${now - since} ms`
        : null;
    }
    // a rank starts at zero failures: any failure since is a verdict
    if (o.numFailed > (prev?.numFailed ?? 0)) {
      return `expert rank ${rank} failed a step: ${o.lastError ?? "unknown error"}`;
    }
    const moved = !prev || !o.hasWork || o.numServed !== prev.numServed;
    const progressAt = moved ? now : prev.progressAt;
    this.#ranks.set(rank, {
      numServed: o.numServed,
      progressAt,
      numFailed: o.numFailed,
      unreachableSince: null,
    });
    if (now - progressAt < this.opts.hungAfterMs) return null;
    return `expert rank ${rank} hung: it has had work and no progress for ${now - progressAt} ms`;
  }
}
