/**
 * The JobExecutor's request/job/task records in its SQLite storage: every write to those tables,
 * and the one store the JobExecutor, BatchRunner, watchdog and migrations use (its reads are the
 * statements in record-queries.ts, a task report's writes are in record-progress.ts, the schema
 * in record-schema.ts; rows become records in record-rows.ts). Records are tenant-scoped: reads
 * take the tenant.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { type Placement, placedTasks } from "../shared/serving/dispatch.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import type { MirrorMode } from "../shared/serving/report-effects.ts";
import type { JobKind, RequestKind, RequestStatus, TaskRole } from "../shared/types/records.ts";
import { type AppliedProgress, applyTaskProgress, applyToParents } from "./record-progress.ts";
import { RecordQueries } from "./record-queries.ts";
import { openRecordTables, TERMINAL } from "./record-schema.ts";

export interface NewRequest {
  id: string;
  tenant: string;
  model: string;
  kind: RequestKind;
  clientRequestId: string | null;
  receivedAt: number;
}

export interface NewTask {
  id: string;
  jobId: string;
  requestId: string;
  role: TaskRole;
  instanceId: string;
  npu: string;
  /** The task waited this long for its deployment to scale from zero. */
  coldStartMs?: number | null;
}

/** The tasks of a placed job attempt, as records to insert. */
export function placedNewTasks(
  placement: Placement,
  jobId: string,
  requestId: string,
  coldStartMs: number | null = null,
): NewTask[] {
  return placedTasks(placement).map(([role, t]) => ({
    id: t.taskId,
    jobId,
    requestId,
    role,
    instanceId: t.instanceId,
    npu: t.npu,
    coldStartMs,
  }));
}

export class RecordStore {
  /** Requests to record once the current answer has gone out (`createSoon`). */
  #pending: (() => void)[] = [];
  readonly #queries: RecordQueries;

  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly log: Logger,
  ) {
    openRecordTables(storage.sql);
    this.#queries = new RecordQueries(storage.sql);
  }

  /**
   * Records a request as `create` does, right after the JobExecutor's current answer has gone
   * out: a storage write made before it answers holds the answer until the write is durable
   * (workerd's output gate), which cost about 0.6 ms of every request's time to first token.
   * Every other method applies pending records first, so no read, report or cancel misses one.
   */
  createSoon(r: NewRequest, jobs: { id: string; kind: JobKind }[], tasks: NewTask[]): void {
    const queuedAt = Date.now();
    this.#pending.push(() => this.create(r, jobs, tasks, undefined, queuedAt));
    if (this.#pending.length === 1) setTimeout(() => this.flush(), 0);
  }

  /** Writes the records `createSoon` deferred; one that fails is logged, not thrown. */
  flush(): void {
    const pending = this.#pending;
    this.#pending = [];
    for (const create of pending) {
      try {
        create();
      } catch (e) {
        this.log.error("record.write_failed", errorFields(e));
      }
    }
  }

  private get sql(): SqlStorage {
    return this.storage.sql;
  }

  /**
   * Records a request with its queued jobs and their tasks, in one transaction (with `also`, the
   * caller's own writes for the same request).
   */
  create(
    r: NewRequest,
    jobs: { id: string; kind: JobKind }[],
    tasks: NewTask[],
    also?: () => void,
    now = Date.now(),
  ): void {
    const sql = this.sql;
    this.storage.transactionSync(() => {
      sql.exec(
        "INSERT INTO requests (id, tenant, model, kind, status, client_request_id, received_at, queued_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
        r.id,
        r.tenant,
        r.model,
        r.kind,
        r.clientRequestId,
        r.receivedAt,
        now,
      );
      for (const j of jobs) {
        sql.exec(
          "INSERT INTO jobs (id, request_id, kind, status, queued_at) VALUES (?, ?, ?, 'queued', ?)",
          j.id,
          r.id,
          j.kind,
          now,
        );
      }
      for (const t of tasks) this.insertTask(t, now);
      also?.();
    });
  }

  private insertTask(t: NewTask, now: number): void {
    this.sql.exec(
      "INSERT INTO tasks (id, job_id, request_id, role, status, instance_id, npu, queued_at, cold_start_ms) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
      t.id,
      t.jobId,
      t.requestId,
      t.role,
      t.instanceId,
      t.npu,
      now,
      t.coldStartMs ?? null,
    );
  }

  /** Adds a task to a recorded job (a batch job's attempt); its job and request start running. */
  addTask(t: NewTask): void {
    this.flush();
    const now = Date.now();
    this.storage.transactionSync(() => {
      this.insertTask(t, now);
      applyToParents(this.sql, t.jobId, t.requestId, t.role, { status: "running", startedAt: now });
    });
  }

  /**
   * Applies an instance's report on a task to the task and mirrors it onto its job and request
   * (record-progress.ts), as `mirror` says. Null for an unknown task.
   */
  applyProgress(
    taskId: string,
    p: TaskProgress,
    mirror: MirrorMode = "auto",
  ): AppliedProgress | null {
    this.flush();
    return applyTaskProgress(this.storage, taskId, p, mirror);
  }

  /** A job's first generated token (batch jobs, whose runner reads the stream itself). */
  markFirstToken(jobId: string, requestId: string, at: number): void {
    this.flush();
    this.storage.transactionSync(() =>
      applyToParents(this.sql, jobId, requestId, "colocated", { firstTokenAt: at }),
    );
  }

  /** The read-only statements (record-queries.ts), after the pending writes. */
  read(): RecordQueries {
    this.flush();
    return this.#queries;
  }

  /** Marks a request and everything in it that has not finished as cancelled (no transaction). */
  cancel(requestId: string, now: number): void {
    this.flush();
    for (const table of ["tasks", "jobs", "requests"]) {
      const key = table === "requests" ? "id" : "request_id";
      this.sql.exec(
        `UPDATE ${table} SET status = 'cancelled', finished_at = ?${table === "tasks" ? ", error = COALESCE(error, 'request cancelled')" : ""} WHERE ${key} = ? AND status NOT IN ${TERMINAL}`,
        now,
        requestId,
      );
    }
  }

  /** Fails a job's unfinished tasks (its executor restarted or its instance refused it). */
  failTasks(jobId: string, error: string, now: number): void {
    this.flush();
    this.sql.exec(
      `UPDATE tasks SET status = 'failed', error = COALESCE(error, ?), finished_at = ? WHERE job_id = ? AND status NOT IN ${TERMINAL}`,
      error,
      now,
      jobId,
    );
  }

  /** Puts a job back in the queue (a batch job to run again); a finished job stays finished. */
  requeueJob(jobId: string): void {
    this.flush();
    this.sql.exec(
      `UPDATE jobs SET status = 'queued', started_at = NULL, first_token_at = NULL WHERE id = ? AND status NOT IN ${TERMINAL}`,
      jobId,
    );
  }

  /** Ends a job that is still live; false when it had already ended (cancelled meanwhile). */
  finishJob(jobId: string, status: "succeeded" | "failed", now: number): boolean {
    this.flush();
    const live = this.#queries.jobStatus(jobId);
    if (live !== "queued" && live !== "running") return false;
    this.sql.exec(
      "UPDATE jobs SET status = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
      status,
      now,
      jobId,
    );
    return true;
  }

  /** Ends a request that is still live. */
  finishRequest(requestId: string, status: RequestStatus, error: string | null, now: number): void {
    this.flush();
    this.sql.exec(
      `UPDATE requests SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status NOT IN ${TERMINAL}`,
      status,
      now,
      error,
      requestId,
    );
  }

  /** Runs `fn` in one storage transaction. */
  transaction(fn: () => void): void {
    this.flush();
    this.storage.transactionSync(fn);
  }
}
