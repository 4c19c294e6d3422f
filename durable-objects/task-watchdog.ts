/**
 * The JobExecutor's watchdog (rules in shared/serving/watchdog.ts): while any of its tasks is
 * live, its alarm comes every WATCHDOG_INTERVAL_MS and this asks each of their Npus for its
 * health, recovers hung Npus and fails lost tasks through the JobExecutor's own task reports, so
 * their jobs and requests end too. The alarm is durable: after a restart the first round runs
 * within an interval, which is the start-up reconciliation.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import {
  type NpuHealth,
  WATCHDOG_INTERVAL_MS,
  Watchdog,
  type WatchedTask,
} from "../shared/serving/watchdog.ts";
import type { Env } from "./env.ts";
import type { RecordStore } from "./records.ts";

/** A health call slower than this counts as no answer for that round. */
const HEALTH_TIMEOUT_MS = 2_000;

export interface WatchdogHost {
  env: Env;
  log: Logger;
  records: RecordStore;
  /** Ends a task (and so its job and request) as failed. */
  fail(task: WatchedTask, reason: string): Promise<void>;
  /** Sets the alarm to `at` unless it fires earlier. */
  arm(at: number): void;
  /** A hung Npu was recovered (its engine replaced): it may take work again. */
  recovered(npu: string): void;
}

/** The promise's value, or null when it throws or takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const late = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([p.catch(() => null), late]);
  } finally {
    if (timer !== null) clearTimeout(timer);
  }
}

export class TaskWatchdog {
  readonly #dog = new Watchdog();
  /** The alarm is set for the next round (cleared when a round starts). */
  #armed = false;

  constructor(private readonly host: WatchdogHost) {}

  /** Makes sure a round comes within an interval (a task was placed, or the JE started). */
  arm(): void {
    if (this.#armed) return;
    this.#armed = true;
    this.host.arm(Date.now() + WATCHDOG_INTERVAL_MS);
  }

  /** One round (from the alarm); arms the next while tasks stay live. */
  async check(): Promise<void> {
    this.#armed = false;
    const tasks = this.host.records.read().watchedTasks();
    if (tasks.length === 0) return;
    const npus = [...new Set(tasks.map((t) => t.npu))];
    const health = new Map<string, NpuHealth | null>(
      await Promise.all(
        npus.map(
          async (n) =>
            [n, await within(this.host.env.NPU.getByName(n).health(), HEALTH_TIMEOUT_MS)] as const,
        ),
      ),
    );
    const now = Date.now();
    const v = this.#dog.check(tasks, health, now);
    const { log } = this.host;
    await Promise.all([
      ...v.hung.map(async (npu) => {
        log.warn("watchdog.npu_hung", { npu });
        await this.host.env.NPU.getByName(npu)
          .recover({ reason: "instance hung (no engine step)" })
          .then(() => this.host.recovered(npu))
          .catch((e: unknown) => log.warn("watchdog.recover_failed", { npu, ...errorFields(e) }));
      }),
      ...v.failed.map(async ({ task, reason }) => {
        log.warn("watchdog.task_failed", { requestId: task.requestId, taskId: task.id, reason });
        await this.host.fail(task, reason);
      }),
    ]);
    if (this.host.records.read().watchedTasks().length > 0) this.arm();
  }
}
