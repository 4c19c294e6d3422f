/**
 * The JobExecutor's one alarm, multiplexed over every timer it keeps: `arm` sets the alarm to a
 * time unless one is set to fire earlier, `scheduleSnapshot` debounces the scheduling-state
 * snapshot (one write a few seconds after the first change), and `fire` runs on the alarm: it
 * writes the pending snapshot, then runs each timer's round in order and re-arms for the next
 * time a round asks for.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { shouldSetAlarm } from "../shared/serving/batch.ts";

/** Delay before scheduling state is snapshotted to storage. */
const SNAPSHOT_DELAY_MS = 5_000;

/** One timer's round on the alarm: the next time it needs the alarm, or null for none. */
export type AlarmRound = () => number | null | Promise<number | null>;

export interface AlarmHost {
  ctx: DurableObjectState;
  log: Logger;
  /** Writes the changed scheduling state. */
  snapshot: () => void;
  /** The timers' rounds, run in this order on every alarm. */
  rounds: readonly AlarmRound[];
}

export class AlarmTimers {
  readonly #host: AlarmHost;
  /** When changes not yet written are due to be snapshotted (an alarm is set), or null. */
  #snapshotAt: number | null = null;

  constructor(host: AlarmHost) {
    this.#host = host;
  }

  /** Sets the alarm to `at` unless one is set to fire earlier (the alarm serves every timer). */
  arm(at: number): void {
    const { ctx, log } = this.#host;
    const storage = ctx.storage;
    ctx.waitUntil(
      (async () => {
        if (shouldSetAlarm(await storage.getAlarm(), at)) await storage.setAlarm(at);
      })().catch((e: unknown) => log.warn("alarm.set_failed", errorFields(e))),
    );
  }

  /**
   * Snapshots changed scheduling state a few seconds later (one write for many changes): after a
   * placement, and after a task report taught the prefix tree or the predictor.
   */
  scheduleSnapshot(): void {
    if (this.#snapshotAt !== null) return;
    this.#snapshotAt = Date.now() + SNAPSHOT_DELAY_MS;
    this.arm(this.#snapshotAt);
  }

  /** The alarm: the pending snapshot (any alarm writes it), then every timer's round. */
  async fire(): Promise<void> {
    if (this.#snapshotAt !== null) {
      this.#snapshotAt = null;
      this.#host.snapshot();
    }
    for (const round of this.#host.rounds) {
      const next = await round();
      if (next !== null) this.arm(next);
    }
  }
}
