/**
 * The JobExecutor's request/job/task records in its SQLite storage: the schema and every SQL
 * statement on those tables. Status rules are pure (shared/serving/records.ts); this module reads
 * rows, applies them and writes the result (rows become records in record-rows.ts). Records are
 * tenant-scoped: reads take the tenant.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import {
  applyToParent,
  applyToTask,
  type RecordState,
  type TaskProgress,
} from "../shared/serving/records.ts";
import type { EndedRequest } from "../shared/serving/serving-metrics.ts";
import type { WatchedTask } from "../shared/serving/watchdog.ts";
import type {
  JobKind,
  JobStatus,
  RequestKind,
  RequestRecord,
  RequestStatus,
  TaskRole,
} from "../shared/types/records.ts";
import { isTerminal } from "../shared/types/records.ts";
import { stateOf, toRequest } from "./record-rows.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, client_request_id TEXT, error TEXT,
  received_at INTEGER NOT NULL, queued_at INTEGER, started_at INTEGER, first_token_at INTEGER,
  finished_at INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, request_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
  queued_at INTEGER, started_at INTEGER, first_token_at INTEGER, finished_at INTEGER);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, request_id TEXT NOT NULL, role TEXT NOT NULL,
  status TEXT NOT NULL, instance_id TEXT NOT NULL, npu TEXT NOT NULL, num_prompt_tokens INTEGER,
  num_completion_tokens INTEGER, error TEXT, queued_at INTEGER, started_at INTEGER,
  first_token_at INTEGER, finished_at INTEGER, cold_start_ms INTEGER);
CREATE INDEX IF NOT EXISTS jobs_by_request ON jobs(request_id);
CREATE INDEX IF NOT EXISTS tasks_by_request ON tasks(request_id);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);`;

const TERMINAL = "('succeeded', 'failed', 'cancelled')";

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

/** What a task report changed, for the JobExecutor's logs and scheduling state. */
export interface AppliedProgress {
  role: TaskRole;
  model: string;
  instanceId: string;
  status: RequestStatus;
  /** The report moved the task to a terminal status. */
  ended: boolean;
  /** Set when the report ended an interactive request: its kind and times. */
  request: EndedRequest | null;
}

/** A task that has not finished: where to cancel it. */
export interface LiveTask {
  id: string;
  npu: string;
}

export class RecordStore {
  /** Requests to record once the current answer has gone out (`createSoon`). */
  #pending: (() => void)[] = [];

  constructor(
    private readonly storage: DurableObjectStorage,
    private readonly log: Logger,
  ) {
    storage.sql.exec(SCHEMA);
    // tables made before tasks had a cold start time
    const cols = storage.sql.exec("SELECT name FROM pragma_table_info('tasks')").toArray();
    if (!cols.some((c) => c.name === "cold_start_ms")) {
      storage.sql.exec("ALTER TABLE tasks ADD COLUMN cold_start_ms INTEGER");
    }
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
      this.#applyToParents(t.jobId, t.requestId, t.role, { status: "running", startedAt: now });
    });
  }

  /**
   * Applies an instance's report on a task to the task and mirrors it onto its job and request
   * (except for batch requests, whose jobs the BatchRunner keeps). `mirror`: "auto" mirrors
   * unless the task had already ended (a late report of an earlier attempt); "none" ends only
   * the task (a failure held while its job migrates); "force" mirrors onto a task that ended
   * already (the held failure, when the job does not migrate after all). Null for an unknown task.
   */
  applyProgress(
    taskId: string,
    p: TaskProgress,
    mirror: "auto" | "none" | "force" = "auto",
  ): AppliedProgress | null {
    this.flush();
    const sql = this.sql;
    const t = sql
      .exec(
        "SELECT t.*, r.model AS model, r.kind AS request_kind, r.status AS request_status, r.received_at AS received_at FROM tasks t JOIN requests r ON r.id = t.request_id WHERE t.id = ?",
        taskId,
      )
      .toArray()[0];
    if (!t) return null;
    const role = t.role as TaskRole;
    const before = stateOf(t);
    const after = applyToTask(before, p);
    let request: RecordState | null = null;
    this.storage.transactionSync(() => {
      sql.exec(
        "UPDATE tasks SET status = ?, started_at = ?, first_token_at = ?, finished_at = ?, error = ?, num_prompt_tokens = COALESCE(?, num_prompt_tokens), num_completion_tokens = COALESCE(?, num_completion_tokens) WHERE id = ?",
        after.status,
        after.startedAt,
        after.firstTokenAt,
        after.finishedAt,
        after.error,
        p.numPromptTokens ?? null,
        p.numCompletionTokens ?? null,
        taskId,
      );
      // a batch's jobs and request are kept by its runner (batch-runner.ts)
      const late = isTerminal(before.status) && mirror === "auto";
      if (t.request_kind !== "batch" && mirror !== "none" && !late) {
        request = this.#applyToParents(t.job_id as string, t.request_id as string, role, p);
      }
    });
    const r = request as RecordState | null;
    return {
      role,
      model: t.model as string,
      instanceId: t.instance_id as string,
      status: after.status,
      ended: after.status !== before.status && after.finishedAt !== null,
      request:
        r && isTerminal(r.status) && !isTerminal(t.request_status as RequestStatus)
          ? {
              kind: t.request_kind as JobKind,
              status: r.status,
              receivedAt: t.received_at as number,
              firstTokenAt: r.firstTokenAt,
              finishedAt: r.finishedAt,
            }
          : null,
    };
  }

  /** Mirrors a task's report onto its job and request; the request's state after it (or null). */
  #applyToParents(
    jobId: string,
    requestId: string,
    role: TaskRole,
    p: TaskProgress,
  ): RecordState | null {
    let request: RecordState | null = null;
    for (const [table, id] of [
      ["jobs", jobId],
      ["requests", requestId],
    ] as const) {
      const row = this.sql.exec(`SELECT * FROM ${table} WHERE id = ?`, id).toArray()[0];
      if (!row) continue;
      const s = applyToParent(stateOf(row), role, p, table === "requests");
      if (table === "requests") request = s;
      this.sql.exec(
        `UPDATE ${table} SET status = ?, started_at = ?, first_token_at = ?, finished_at = ?${table === "requests" ? ", error = ?" : ""} WHERE id = ?`,
        s.status,
        s.startedAt,
        s.firstTokenAt,
        s.finishedAt,
        ...(table === "requests" ? [s.error] : []),
        id,
      );
    }
    return request;
  }

  /** A job's first generated token (batch jobs, whose runner reads the stream itself). */
  markFirstToken(jobId: string, requestId: string, at: number): void {
    this.flush();
    this.storage.transactionSync(() =>
      this.#applyToParents(jobId, requestId, "colocated", { firstTokenAt: at }),
    );
  }

  /** The tenant and model of a request (a batch job's owner), or null. */
  owner(requestId: string): { tenant: string; model: string } | null {
    this.flush();
    const row = this.sql
      .exec("SELECT tenant, model FROM requests WHERE id = ?", requestId)
      .toArray()[0];
    return row ? { tenant: row.tenant as string, model: row.model as string } : null;
  }

  requestStatus(requestId: string, tenant?: string): RequestStatus | null {
    this.flush();
    const row = this.sql
      .exec(
        `SELECT status FROM requests WHERE id = ?${tenant === undefined ? "" : " AND tenant = ?"}`,
        requestId,
        ...(tenant === undefined ? [] : [tenant]),
      )
      .toArray()[0];
    return row ? (row.status as RequestStatus) : null;
  }

  jobStatus(jobId: string): JobStatus | null {
    this.flush();
    const row = this.sql.exec("SELECT status FROM jobs WHERE id = ?", jobId).toArray()[0];
    return row ? (row.status as JobStatus) : null;
  }

  numTasks(jobId: string): number {
    this.flush();
    return this.sql.exec("SELECT COUNT(*) AS n FROM tasks WHERE job_id = ?", jobId).one()
      .n as number;
  }

  /** The unfinished tasks of a request or job. */
  liveTasks(key: "request_id" | "job_id", id: string): LiveTask[] {
    this.flush();
    return this.sql
      .exec(`SELECT id, npu FROM tasks WHERE ${key} = ? AND status NOT IN ${TERMINAL}`, id)
      .toArray()
      .map((t) => ({ id: t.id as string, npu: t.npu as string }));
  }

  /**
   * Every unfinished task, for the watchdog: where it runs and since when it should be there
   * (placed; a PD decode task once its prefill task ended).
   */
  watchedTasks(): WatchedTask[] {
    this.flush();
    return this.sql
      .exec(
        `SELECT t.id, t.request_id, t.npu, t.role, t.queued_at, r.kind AS request_kind,
           (SELECT MAX(p.finished_at) FROM tasks p WHERE p.job_id = t.job_id AND p.role = 'prefill') AS prefill_ended_at
         FROM tasks t JOIN requests r ON r.id = t.request_id WHERE t.status NOT IN ${TERMINAL}`,
      )
      .toArray()
      .map((t) => ({
        id: t.id as string,
        requestId: t.request_id as string,
        npu: t.npu as string,
        expectedSince:
          t.role === "decode"
            ? (t.prefill_ended_at as number | null)
            : ((t.queued_at as number | null) ?? 0),
        batch: t.request_kind === "batch",
      }));
  }

  /**
   * Interactive jobs still live whose tasks have all ended, one of them failed: failures held
   * for a migration that a restart forgot (job-migrations.ts). The last failed task of each.
   */
  heldFailures(): { requestId: string; taskId: string; error: string | null }[] {
    this.flush();
    return this.sql
      .exec(
        `SELECT j.request_id, (SELECT t.id FROM tasks t WHERE t.job_id = j.id AND t.status = 'failed' ORDER BY t.finished_at DESC LIMIT 1) AS task_id,
           (SELECT t.error FROM tasks t WHERE t.job_id = j.id AND t.status = 'failed' ORDER BY t.finished_at DESC LIMIT 1) AS error
         FROM jobs j JOIN requests r ON r.id = j.request_id
         WHERE j.status NOT IN ${TERMINAL} AND r.kind != 'batch'
           AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.status NOT IN ${TERMINAL})`,
      )
      .toArray()
      .filter((r) => r.task_id !== null)
      .map((r) => ({
        requestId: r.request_id as string,
        taskId: r.task_id as string,
        error: r.error as string | null,
      }));
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
    const live = this.jobStatus(jobId);
    if (live !== "queued" && live !== "running") return false;
    this.sql.exec(
      "UPDATE jobs SET status = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
      status,
      now,
      jobId,
    );
    return true;
  }

  /** How many of a request's jobs are in each status. */
  jobStatusCounts(requestId: string): { status: JobStatus; n: number }[] {
    this.flush();
    return this.sql
      .exec(
        "SELECT status, COUNT(*) AS n FROM jobs WHERE request_id = ? GROUP BY status",
        requestId,
      )
      .toArray()
      .map((g) => ({ status: g.status as JobStatus, n: g.n as number }));
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

  /**
   * The request with its jobs and tasks, or null when unknown or owned by another tenant;
   * `tenant` null (admin routes only) reads any tenant's.
   */
  get(requestId: string, tenant: string | null): RequestRecord | null {
    this.flush();
    const sql = this.sql;
    const r = (
      tenant === null
        ? sql.exec("SELECT * FROM requests WHERE id = ?", requestId)
        : sql.exec("SELECT * FROM requests WHERE id = ? AND tenant = ?", requestId, tenant)
    ).toArray()[0];
    if (!r) return null;
    const tasks = sql
      .exec("SELECT * FROM tasks WHERE request_id = ? ORDER BY queued_at, id", requestId)
      .toArray();
    const jobs = sql
      .exec("SELECT * FROM jobs WHERE request_id = ? ORDER BY queued_at, id", requestId)
      .toArray();
    return toRequest(r, jobs, tasks);
  }
}
