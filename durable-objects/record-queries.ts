/**
 * The read-only statements on the JobExecutor's request/job/task tables (schema in
 * record-schema.ts): statuses, live and watched tasks, held failures and the whole record.
 * RecordStore (records.ts) hands them out through `read()`, after its pending writes.
 */
import type { WatchedTask } from "../shared/serving/watchdog.ts";
import type { JobStatus, RequestRecord, RequestStatus } from "../shared/types/records.ts";
import { toRequest } from "./record-rows.ts";
import { TERMINAL } from "./record-schema.ts";

/** A task that has not finished: where to cancel it. */
export interface LiveTask {
  id: string;
  npu: string;
}

export class RecordQueries {
  constructor(private readonly sql: SqlStorage) {}

  /** The tenant and model of a request (a batch job's owner), or null. */
  owner(requestId: string): { tenant: string; model: string } | null {
    const row = this.sql
      .exec("SELECT tenant, model FROM requests WHERE id = ?", requestId)
      .toArray()[0];
    return row ? { tenant: row.tenant as string, model: row.model as string } : null;
  }

  requestStatus(requestId: string, tenant?: string): RequestStatus | null {
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
    const row = this.sql.exec("SELECT status FROM jobs WHERE id = ?", jobId).toArray()[0];
    return row ? (row.status as JobStatus) : null;
  }

  numTasks(jobId: string): number {
    return this.sql.exec("SELECT COUNT(*) AS n FROM tasks WHERE job_id = ?", jobId).one()
      .n as number;
  }

  /** The unfinished tasks of a request or job. */
  liveTasks(key: "request_id" | "job_id", id: string): LiveTask[] {
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
   * The interactive job of a task while the job is live: its request and every task of it with
   * its instance (job-migrations.ts rebuilds a migration from them). Null for a batch job's task,
   * an ended job, or an unknown task.
   */
  liveJobOf(
    taskId: string,
  ): { requestId: string; jobId: string; tasks: { id: string; instanceId: string }[] } | null {
    const row = this.sql
      .exec(
        `SELECT t.job_id, t.request_id FROM tasks t JOIN jobs j ON j.id = t.job_id
           JOIN requests r ON r.id = t.request_id
         WHERE t.id = ? AND r.kind != 'batch' AND j.status NOT IN ${TERMINAL}`,
        taskId,
      )
      .toArray()[0];
    if (!row) return null;
    const jobId = row.job_id as string;
    const tasks = this.sql
      .exec("SELECT id, instance_id FROM tasks WHERE job_id = ?", jobId)
      .toArray()
      .map((t) => ({ id: t.id as string, instanceId: t.instance_id as string }));
    return { requestId: row.request_id as string, jobId, tasks };
  }

  /**
   * Interactive jobs still live whose tasks have all ended, one of them failed: failures held
   * for a migration when the JobExecutor restarted (job-migrations.ts holds them again). The
   * last failed task of each.
   */
  heldFailures(): { requestId: string; taskId: string; error: string | null }[] {
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

  /** How many of a request's jobs are in each status. */
  jobStatusCounts(requestId: string): { status: JobStatus; n: number }[] {
    return this.sql
      .exec(
        "SELECT status, COUNT(*) AS n FROM jobs WHERE request_id = ? GROUP BY status",
        requestId,
      )
      .toArray()
      .map((g) => ({ status: g.status as JobStatus, n: g.n as number }));
  }

  /**
   * The request with its jobs and tasks, or null when unknown or owned by another tenant;
   * `tenant` null (admin routes only) reads any tenant's.
   */
  get(requestId: string, tenant: string | null): RequestRecord | null {
    const r = (
      tenant === null
        ? this.sql.exec("SELECT * FROM requests WHERE id = ?", requestId)
        : this.sql.exec("SELECT * FROM requests WHERE id = ? AND tenant = ?", requestId, tenant)
    ).toArray()[0];
    if (!r) return null;
    const tasks = this.sql
      .exec("SELECT * FROM tasks WHERE request_id = ? ORDER BY queued_at, id", requestId)
      .toArray();
    const jobs = this.sql
      .exec("SELECT * FROM jobs WHERE request_id = ? ORDER BY queued_at, id", requestId)
      .toArray();
    return toRequest(r, jobs, tasks);
  }
}
