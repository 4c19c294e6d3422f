/**
 * The JobExecutor's side of request migration (rules in shared/serving/migration.ts). It tracks
 * the live interactive jobs by the task ids of their current attempt. When such a task fails
 * because its instance did (the watchdog, the Npu's engine failure, a refused dispatch), the
 * failure ends the task only and is held: the failed instance gets no new work
 * (UNHEALTHY_FOR_MS) and the ClusterManager is told to replace it, and the worker, which saw the
 * stream's error, asks `resume` for the next attempt. A failure not resumed within
 * RESUME_WAIT_MS, or one that cannot migrate (attempts used up, no other instance, the request
 * ended), is released onto the job and request: they fail with it, as without migration.
 *
 * Surviving a restart: what a migration needs is durable already and costs no write of its own.
 * The attempt and its tasks' instances are the task rows (task ids name the attempt), a held
 * failure is a live job whose tasks all ended, and the delivered tokens travel with the worker's
 * `resume` (the worker holds the client's stream, so they exist exactly as long as someone can
 * receive a continuation). The in-memory map is a cache: a job it does not know is rebuilt from
 * the records, and at start-up held failures are held again for RESUME_WAIT_MS.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import { attemptOfTask, taskIdFor } from "../shared/protocol/ids.ts";
import type { JobSpec, ResumeJob, Submitted } from "../shared/protocol/messages.ts";
import { placedTasks } from "../shared/serving/dispatch.ts";
import {
  continuationSpec,
  continuationTask,
  MAX_ATTEMPTS,
  RESUME_WAIT_MS,
} from "../shared/serving/migration.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import { isTerminal } from "../shared/types/records.ts";
import { placedNewTasks, type RecordStore } from "./records.ts";

interface Migration {
  requestId: string;
  jobId: string;
  /** The current attempt (0 first). */
  attempt: number;
  /** The current attempt's tasks -> their instances. */
  tasks: Map<string, string>;
  /** The current attempt's failure, held until it is resumed or released. */
  held: { taskId: string; progress: TaskProgress; until: number } | null;
}

export interface MigrationHost {
  log: Logger;
  records: RecordStore;
  /** Sets the alarm to `at` unless it fires earlier. */
  arm(at: number): void;
  /** Applies a task report with the given mirroring (the JobExecutor's own task event path). */
  apply(requestId: string, taskId: string, p: TaskProgress, mirror: "none" | "force"): void;
  /** Plans attempt `attempt` of `spec` on the deployment, not on instance `exclude`. */
  plan(
    spec: JobSpec,
    deploymentId: string,
    attempt: number,
    exclude: string,
  ): Promise<Result<Submitted>>;
}

function cannotMigrate(why: string) {
  return failure(errorInfo("overloaded", `the request cannot migrate: ${why}`));
}

export class JobMigrations {
  readonly #byTask = new Map<string, Migration>();

  constructor(private readonly host: MigrationHost) {}

  /** A submitted interactive job: tracked from its first attempt. */
  track(jobId: string, requestId: string, s: Submitted): void {
    const tasks = new Map(placedTasks(s.placement).map(([, t]) => [t.taskId, t.instanceId]));
    const m: Migration = { requestId, jobId, attempt: 0, tasks, held: null };
    for (const id of tasks.keys()) this.#byTask.set(id, m);
  }

  /**
   * How a task's report reaches its job and request: a failure of a tracked task whose instance
   * failed is held ("none") while attempts remain; anything else as usual ("auto").
   */
  mirrorOf(taskId: string, p: TaskProgress): "auto" | "none" {
    // a failure of a job not in memory (this JobExecutor restarted) finds it in the records
    const m = this.#byTask.get(taskId) ?? (p.status === "failed" ? this.#rebuild(taskId) : null);
    if (!m) return "auto";
    if (p.status === "succeeded" || p.status === "cancelled") {
      // a prefill task's success only starts its job
      if (p.status === "cancelled" || taskId !== taskIdFor(m.jobId, "prefill", m.attempt)) {
        this.#forget(m);
      }
      return "auto";
    }
    if (p.status !== "failed") return "auto";
    if (m.held) return "none"; // another task of the same attempt (PD)
    if (!p.instanceFailure || m.attempt + 1 >= MAX_ATTEMPTS) {
      this.#forget(m);
      return "auto";
    }
    const until = Date.now() + RESUME_WAIT_MS;
    m.held = { taskId, progress: p, until };
    this.host.arm(until);
    this.host.log.warn("job.failure_held", { requestId: m.requestId, taskId, attempt: m.attempt });
    return "none";
  }

  /**
   * The worker's request for the next attempt: plans the continuation (original prompt plus the
   * delivered tokens) on another instance and records its tasks. A failure comes back as a
   * value, and then the held failure ends the job and request.
   */
  async resume(q: ResumeJob): Promise<Result<Submitted>> {
    const m = this.#byTask.get(q.failedTaskId) ?? this.#rebuild(q.failedTaskId);
    if (!m) {
      // not live (the job ended, or the task is not its current attempt's): the failure ends
      // the job and request, if nothing ended them yet
      const p: TaskProgress = { status: "failed", finishedAt: Date.now(), error: q.error };
      this.host.apply(q.spec.requestId, q.failedTaskId, p, "force");
      return cannotMigrate("its job ended or moved on to another attempt");
    }
    if (!m.held) {
      // the worker saw the stream's error before the failure report arrived
      const p: TaskProgress = {
        status: "failed",
        finishedAt: Date.now(),
        error: q.error,
        instanceFailure: true,
      };
      if (this.mirrorOf(q.failedTaskId, p) === "auto") {
        this.host.apply(m.requestId, q.failedTaskId, p, "force");
        return cannotMigrate("attempts used up");
      }
      this.host.apply(m.requestId, q.failedTaskId, p, "none");
    }
    const status = this.host.records.read().requestStatus(m.requestId);
    if (status === null || isTerminal(status)) {
      this.#forget(m);
      return cannotMigrate(`the request is ${status ?? "gone"}`);
    }
    const attempt = m.attempt + 1;
    const spec = continuationSpec(q.spec, q.task, q.choices);
    // never back to the instance that failed (another of the deployment, or none)
    const failed = m.tasks.get(m.held?.taskId ?? q.failedTaskId) ?? "";
    const planned = await this.host.plan(spec, q.deploymentId, attempt, failed);
    if (!planned.ok) {
      this.#release(m, planned.error.message);
      return planned;
    }
    const s = planned.value;
    const tasks = placedTasks(s.placement);
    for (const t of placedNewTasks(s.placement, m.jobId, m.requestId)) this.host.records.addTask(t);
    this.#forget(m);
    m.attempt = attempt;
    m.tasks = new Map(tasks.map(([, t]) => [t.taskId, t.instanceId]));
    m.held = null;
    for (const id of m.tasks.keys()) this.#byTask.set(id, m);
    this.host.log.warn("job.migrated", {
      requestId: m.requestId,
      jobId: m.jobId,
      attempt,
      from: failed,
      instanceId: tasks.at(-1)?.[1].instanceId ?? null,
      numChoices: q.choices.length,
      numDelivered: q.choices.reduce((a, c) => a + c.tokenIds.length, 0),
    });
    return { ok: true, value: { ...s, task: continuationTask(s.task, q.task) } };
  }

  /**
   * At start-up: failures held before a restart are held again (their jobs rebuilt from the
   * records) for RESUME_WAIT_MS, so a worker still streaming can resume them.
   */
  restoreHeld(now: number): void {
    for (const f of this.host.records.read().heldFailures()) {
      const m = this.#rebuild(f.taskId);
      if (!m) continue;
      const error = f.error ?? "instance failed";
      const progress: TaskProgress = { status: "failed", finishedAt: now, error };
      m.held = { taskId: f.taskId, progress, until: now + RESUME_WAIT_MS };
      this.host.arm(m.held.until);
      this.host.log.info("job.failure_restored", { requestId: m.requestId, taskId: f.taskId });
    }
  }

  /**
   * A live interactive job rebuilt from the records (its current attempt: the highest of its
   * task ids), tracked again; null when `taskId` is not of its job's current attempt.
   */
  #rebuild(taskId: string): Migration | null {
    const job = this.host.records.read().liveJobOf(taskId);
    if (!job) return null;
    const attempt = Math.max(...job.tasks.map((t) => attemptOfTask(t.id)));
    if (attemptOfTask(taskId) !== attempt) return null;
    const current = job.tasks.filter((t) => attemptOfTask(t.id) === attempt);
    const tasks = new Map(current.map((t) => [t.id, t.instanceId]));
    const m: Migration = { requestId: job.requestId, jobId: job.jobId, attempt, tasks, held: null };
    for (const id of tasks.keys()) this.#byTask.set(id, m);
    return m;
  }

  /** Releases held failures nobody resumed in time; the earliest still held, or null. */
  releaseExpired(now: number): number | null {
    let next: number | null = null;
    for (const m of new Set(this.#byTask.values())) {
      if (!m.held) continue;
      if (m.held.until <= now) this.#release(m, "not resumed in time");
      else next = Math.min(next ?? m.held.until, m.held.until);
    }
    return next;
  }

  #release(m: Migration, why: string): void {
    this.#forget(m);
    if (!m.held) return;
    const { taskId, progress } = m.held;
    m.held = null;
    this.host.log.warn("job.migration_abandoned", { requestId: m.requestId, taskId, why });
    this.host.apply(m.requestId, taskId, progress, "force");
  }

  #forget(m: Migration): void {
    for (const id of m.tasks.keys()) this.#byTask.delete(id);
  }
}
