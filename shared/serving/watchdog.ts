/**
 * The JobExecutor's watchdog over the instances running its tasks (xDeepServe's heartbeats):
 * while any of its tasks is live, every WATCHDOG_INTERVAL_MS it asks each of their Npus for its
 * health (the engine loop's step counter, whether it has work, the tasks it holds) and decides:
 *
 * - hung: the Npu has work but its step counter has not moved for HUNG_AFTER_MS (its loop awaits
 *   something that never resolves while the object still answers calls): the Npu is told to
 *   recover (fail its streams, replace its engine) and its tasks are failed;
 * - lost task: a task that should be on its Npu (placed, and for a PD decode task, its prefill
 *   ended) is not there for LOST_AFTER_MS (the Npu restarted and came back empty, or the worker
 *   that dispatched it died): the task is failed;
 * - unreachable: the Npu's health call has thrown for LOST_AFTER_MS: its tasks are failed.
 *
 * A failed task fails its job and request, so every record ends within about
 * LOST_AFTER_MS + WATCHDOG_INTERVAL_MS of an instance's death (HUNG_AFTER_MS + the interval for
 * a hung loop), and after a server restart too (the alarm is durable). Pure: observations in,
 * verdicts out.
 */

export const WATCHDOG_INTERVAL_MS = 1_000;
/** A loop with work and no completed step for this long is hung (a step takes milliseconds). */
export const HUNG_AFTER_MS = 10_000;
/** A task missing from its Npu, or an Npu not answering, for this long is lost. */
export const LOST_AFTER_MS = 5_000;

/** What an Npu tells the watchdog. */
export interface NpuHealth {
  /** Engine steps completed since the Npu started: the progress counter. */
  numSteps: number;
  hasWork: boolean;
  /** Tasks it holds (running, or starting: loading the model, pulling KV). */
  taskIds: string[];
}

/** A live task as the watchdog sees it. */
export interface WatchedTask {
  id: string;
  requestId: string;
  npu: string;
  /** When the task should be on its Npu (placed; a decode task: its prefill ended), or null. */
  expectedSince: number | null;
  /** Batch tasks are re-run by the BatchRunner: the watchdog only recovers their hung Npus. */
  batch: boolean;
}

interface NpuWatch {
  numSteps: number;
  progressAt: number;
  unreachableSince: number | null;
}

export interface Verdicts {
  /** Npus to recover (hung loops). */
  hung: string[];
  /** Tasks to fail, with why. */
  failed: { task: WatchedTask; reason: string }[];
}

export class Watchdog {
  readonly #npus = new Map<string, NpuWatch>();
  /** taskId -> when its Npu first did not hold it */
  readonly #missingSince = new Map<string, number>();

  /**
   * One round: `health` has each Npu's answer (null: the call threw). Forgets Npus and tasks no
   * longer watched.
   */
  check(
    tasks: readonly WatchedTask[],
    health: Map<string, NpuHealth | null>,
    now: number,
  ): Verdicts {
    const verdicts: Verdicts = { hung: [], failed: [] };
    const npuVerdict = new Map<string, string | null>();
    for (const [npu, h] of health) {
      const reason = this.#observe(npu, h, now);
      npuVerdict.set(npu, reason);
      if (reason !== null && h !== null) verdicts.hung.push(npu);
    }
    const live = new Set<string>();
    for (const t of tasks) {
      live.add(t.id);
      // a batch task's stream fails with its Npu, and its runner decides what happens next
      if (t.batch) continue;
      const npuReason = npuVerdict.get(t.npu) ?? null;
      if (npuReason !== null) {
        verdicts.failed.push({ task: t, reason: npuReason });
        continue;
      }
      const h = health.get(t.npu);
      if (!h || t.expectedSince === null || h.taskIds.includes(t.id)) {
        this.#missingSince.delete(t.id);
        continue;
      }
      const since = this.#missingSince.get(t.id) ?? now;
      this.#missingSince.set(t.id, since);
      if (now - since >= LOST_AFTER_MS && now - t.expectedSince >= LOST_AFTER_MS) {
        verdicts.failed.push({
          task: t,
          reason: `instance lost the task: ${t.npu} has not held it for ${now - since} ms (it restarted, or the task never reached it)`,
        });
      }
    }
    for (const id of this.#missingSince.keys()) if (!live.has(id)) this.#missingSince.delete(id);
    for (const npu of this.#npus.keys()) if (!health.has(npu)) this.#npus.delete(npu);
    return verdicts;
  }

  /** Why the Npu's tasks fail (hung, unreachable), or null while it is healthy. */
  #observe(npu: string, h: NpuHealth | null, now: number): string | null {
    const prev = this.#npus.get(npu);
    if (h === null) {
      const since = prev?.unreachableSince ?? now;
      this.#npus.set(npu, {
        numSteps: prev?.numSteps ?? -1,
        progressAt: prev?.progressAt ?? now,
        unreachableSince: since,
      });
      return now - since >= LOST_AFTER_MS
        ? `instance unreachable: ${npu} has not answered for ${now - since} ms`
        : null;
    }
    const moved = !prev || !h.hasWork || h.numSteps !== prev.numSteps;
    const progressAt = moved ? now : prev.progressAt;
    this.#npus.set(npu, { numSteps: h.numSteps, progressAt, unreachableSince: null });
    if (now - progressAt < HUNG_AFTER_MS) return null;
    // recovered below: the next round starts a fresh count
    this.#npus.delete(npu);
    return `instance hung: ${npu} has had work and no engine step for ${now - progressAt} ms`;
  }
}
