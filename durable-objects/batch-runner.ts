/**
 * DeepFlow's batch-inference job kind inside the JobExecutor: the SQLite queue (`batch_jobs`, one
 * job per item) and its driving — dispatch under bounded concurrency, the watchdog alarm that lets
 * a restarted JE resume its queue, each job's placement on a colocated deployment, its run with
 * `Npu.generate` and the collected OpenAI response body stored as its result. Also cancels
 * requests of any kind. The rules (what to start, recover, store, and when a request ends) are
 * pure, in shared/serving/batch.ts. The JE owns this object; it must not import workers/.
 */
import type { ErrorInfo, Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { CLUSTER_MANAGER_NAME } from "../shared/protocol/names.ts";
import {
  type BatchJob,
  type BatchJobSpec,
  type BatchSubmit,
  batchErrors,
  cancelRefusal,
  capacityPause,
  decodeEvents,
  decorateBatch,
  dispatchSlots,
  generateTask,
  interruptedJobs,
  jobCounts,
  jobKind,
  placeFields,
  recoverJob,
  requestOutcome,
  requeuesOn,
  responseMeta,
  shouldSetAlarm,
  storedError,
  storedResult,
  tapFirstToken,
  watchdogAt,
} from "../shared/serving/batch.ts";
import { collectResponse } from "../shared/serving/openai-response.ts";
import type { JobStatus, RequestRecord, RequestStatus } from "../shared/types/records.ts";
import type { Env } from "./env.ts";
import type { Placement, SubmitRequest } from "./job-executor.ts";

export type { BatchJobSpec, BatchSubmit } from "../shared/serving/batch.ts";

export const BATCH_SCHEMA = `
CREATE TABLE IF NOT EXISTS batch_jobs (
  job_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL, result TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS batch_jobs_by_state ON batch_jobs(state);
CREATE INDEX IF NOT EXISTS batch_jobs_by_request ON batch_jobs(request_id, idx);`;

/** What the runner needs from its JobExecutor. */
export interface BatchHost {
  ctx: DurableObjectState;
  env: Env;
  log: Logger;
  /** The JE's placement (DeepFlow's Algorithm 1); records nothing. */
  place(r: SubmitRequest): Promise<Placement>;
}

const TERMINAL = "('succeeded', 'failed', 'cancelled')";
/** SQL for `status = ?` that never overwrites a terminal status (reports arrive out of order). */
export const KEEP_TERMINAL = `CASE WHEN status IN ${TERMINAL} THEN status ELSE ? END`;

function uuid(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

export class BatchRunner {
  /** Job ids this isolate is running; a `dispatched` row not in here was cut off by a restart. */
  private readonly inFlight = new Set<string>();
  private pausedUntil = 0;

  constructor(private readonly host: BatchHost) {}

  private get sql(): SqlStorage {
    return this.host.ctx.storage.sql;
  }

  /** Records a batch request with one queued job per item and starts running them. */
  submit(b: BatchSubmit): void {
    const now = Date.now();
    const sql = this.sql;
    this.host.ctx.storage.transactionSync(() => {
      sql.exec(
        "INSERT INTO requests (id, tenant, model, kind, status, client_request_id, received_at, queued_at) VALUES (?, ?, ?, 'batch', 'queued', ?, ?, ?)",
        b.requestId,
        b.tenant,
        b.model,
        b.clientRequestId,
        b.receivedAt,
        now,
      );
      b.jobs.forEach((j, idx) => {
        sql.exec(
          "INSERT INTO jobs (id, request_id, kind, status, queued_at) VALUES (?, ?, ?, 'queued', ?)",
          j.jobId,
          b.requestId,
          jobKind(j.kind),
          now,
        );
        sql.exec(
          "INSERT INTO batch_jobs (job_id, request_id, idx, state, spec) VALUES (?, ?, ?, 'queued', ?)",
          j.jobId,
          b.requestId,
          idx,
          JSON.stringify(j),
        );
      });
    });
    const numJobs = b.jobs.length;
    this.host.log.info("job.created", { requestId: b.requestId, kind: "batch", numJobs });
    this.kick();
  }

  /** The alarm: re-queues jobs a restart cut off, then fills the free slots. */
  alarm(): void {
    this.recover();
    this.kick();
  }

  /**
   * Cancels a request of any kind: its queued jobs are cancelled, its running tasks cancelled on
   * their Npus (which frees their KV blocks), and the request is marked cancelled.
   */
  async cancel(q: { requestId: string; tenant: string }): Promise<Result<null>> {
    const sql = this.sql;
    const r = sql
      .exec("SELECT status FROM requests WHERE id = ? AND tenant = ?", q.requestId, q.tenant)
      .toArray()[0];
    const refusal = cancelRefusal(q.requestId, r ? (r.status as RequestStatus) : null);
    if (refusal) return { ok: false, error: refusal };
    const now = Date.now();
    const live = this.liveTasks("request_id", q.requestId);
    this.host.ctx.storage.transactionSync(() => {
      for (const table of ["tasks", "jobs", "requests"]) {
        const key = table === "requests" ? "id" : "request_id";
        sql.exec(
          `UPDATE ${table} SET status = 'cancelled', finished_at = ?${table === "tasks" ? ", error = COALESCE(error, 'request cancelled')" : ""} WHERE ${key} = ? AND status NOT IN ${TERMINAL}`,
          now,
          q.requestId,
        );
      }
      sql.exec(
        "UPDATE batch_jobs SET state = 'done' WHERE request_id = ? AND state = 'queued'",
        q.requestId,
      );
    });
    await Promise.allSettled(live.map((t) => this.cancelTask(t, "request cancelled")));
    const numTasksCancelled = live.length;
    this.host.log.info("request.cancelled", { requestId: q.requestId, numTasksCancelled });
    return { ok: true, value: null };
  }

  /** A batch request's record with each job's index, result or error, and the job counts. */
  decorate(rec: RequestRecord): RequestRecord {
    const rows = this.sql
      .exec(
        "SELECT job_id, idx, result, error FROM batch_jobs WHERE request_id = ? ORDER BY idx",
        rec.id,
      )
      .toArray()
      .map((row) => ({
        jobId: row.job_id as string,
        index: row.idx as number,
        result: typeof row.result === "string" ? row.result : null,
        error: typeof row.error === "string" ? row.error : null,
      }));
    return decorateBatch(rec, rows);
  }

  // --- the queue

  /** Starts queued jobs (oldest first) while there are free slots. */
  private kick(): void {
    const slots = dispatchSlots({
      inFlight: this.inFlight.size,
      now: Date.now(),
      pausedUntil: this.pausedUntil,
    });
    const rows =
      slots === 0
        ? []
        : this.sql
            .exec(
              "SELECT job_id FROM batch_jobs WHERE state = 'queued' ORDER BY rowid LIMIT ?",
              slots,
            )
            .toArray();
    for (const row of rows) this.dispatch(row.job_id as string);
    this.arm();
  }

  /** Marks the job dispatched (one more attempt) and runs it in the background. */
  private dispatch(jobId: string): void {
    this.sql.exec(
      "UPDATE batch_jobs SET state = 'dispatched', attempts = attempts + 1 WHERE job_id = ?",
      jobId,
    );
    this.inFlight.add(jobId);
    const { log } = this.host;
    this.host.ctx.waitUntil(
      this.run(jobId)
        .catch((e: unknown) =>
          log.error("error.unhandled", { where: "batch job", jobId, ...errorFields(e) }),
        )
        .finally(() => {
          this.inFlight.delete(jobId);
          this.kick();
        }),
    );
  }

  /** Keeps an alarm set while batch work remains (the watchdog that resumes after a restart). */
  private arm(): void {
    const pending =
      this.sql.exec("SELECT 1 FROM batch_jobs WHERE state != 'done' LIMIT 1").toArray().length > 0;
    const now = Date.now();
    const at = watchdogAt({
      pending,
      inFlight: this.inFlight.size,
      now,
      pausedUntil: this.pausedUntil,
    });
    if (at === null) return;
    const storage = this.host.ctx.storage;
    this.host.ctx.waitUntil(
      (async () => {
        if (shouldSetAlarm(await storage.getAlarm(), at)) await storage.setAlarm(at);
      })().catch((e: unknown) => {
        this.host.log.warn("alarm.set_failed", errorFields(e));
      }),
    );
  }

  /**
   * Jobs that were running when the JE restarted: their tasks are failed (and cancelled on their
   * Npus, best effort) and the job is queued again, up to MAX_ATTEMPTS runs; then it fails.
   */
  private recover(): void {
    const sql = this.sql;
    const dispatched = sql
      .exec(
        "SELECT job_id, request_id, attempts, (result IS NOT NULL OR error IS NOT NULL) AS stored FROM batch_jobs WHERE state = 'dispatched'",
      )
      .toArray()
      .map((r) => ({
        jobId: r.job_id as string,
        requestId: r.request_id as string,
        attempts: r.attempts as number,
        stored: (r.stored as number) !== 0,
      }));
    for (const j of interruptedJobs(dispatched, this.inFlight)) {
      const { jobId, requestId, attempts } = j;
      const tasks = this.liveTasks("job_id", jobId);
      sql.exec(
        `UPDATE tasks SET status = 'failed', error = 'job executor restarted', finished_at = ? WHERE job_id = ? AND status NOT IN ${TERMINAL}`,
        Date.now(),
        jobId,
      );
      for (const t of tasks) {
        this.host.ctx.waitUntil(this.cancelTask(t, "job executor restarted").catch(() => {}));
      }
      const next = recoverJob(j);
      if (next.action === "fail") {
        this.finish(jobId, requestId, { error: next.error });
      } else {
        sql.exec(
          `UPDATE jobs SET status = ${KEEP_TERMINAL}, started_at = NULL, first_token_at = NULL WHERE id = ?`,
          "queued",
          jobId,
        );
        sql.exec("UPDATE batch_jobs SET state = ? WHERE job_id = ?", next.state, jobId);
      }
      this.host.log.warn("job.requeued", { requestId, jobId, attempts });
    }
  }

  /** The unfinished tasks of a request or job. */
  private liveTasks(key: "request_id" | "job_id", id: string): { id: string; npu: string }[] {
    return this.sql
      .exec(`SELECT id, npu FROM tasks WHERE ${key} = ? AND status NOT IN ${TERMINAL}`, id)
      .toArray()
      .map((t) => ({ id: t.id as string, npu: t.npu as string }));
  }

  private cancelTask(t: { id: string; npu: string }, reason: string): Promise<unknown> {
    return this.host.env.NPU.getByName(t.npu).cancel({ taskId: t.id, reason });
  }

  // --- one job

  private isLive(jobId: string): boolean {
    const row = this.sql.exec("SELECT status FROM jobs WHERE id = ?", jobId).toArray()[0];
    const s = row ? (row.status as JobStatus) : null;
    return s === "queued" || s === "running";
  }

  /** Places the job, runs it on its Npu and stores its response body (or error). */
  private async run(jobId: string): Promise<void> {
    const sql = this.sql;
    const row = sql
      .exec(
        "SELECT b.spec AS spec, b.request_id AS request_id, r.tenant AS tenant, r.model AS model, r.received_at AS received_at FROM batch_jobs b JOIN requests r ON r.id = b.request_id WHERE b.job_id = ?",
        jobId,
      )
      .toArray()[0];
    if (!row) return;
    const requestId = row.request_id as string;
    const fail = (error: ErrorInfo) => this.finish(jobId, requestId, { error });
    if (!this.isLive(jobId)) {
      sql.exec("UPDATE batch_jobs SET state = 'done' WHERE job_id = ?", jobId);
      return;
    }
    const job: BatchJob = {
      requestId,
      tenant: row.tenant as string,
      model: row.model as string,
      receivedAt: row.received_at as number,
      spec: JSON.parse(row.spec as string) as BatchJobSpec,
    };
    const cluster = this.host.env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);
    const model = await cluster.getModel({ name: job.model });
    if (!model) return fail(batchErrors.modelNotFound(job.model));
    const deployments = model.deployments.filter((d) => d.mode === "colocated");
    if (deployments.length === 0) return fail(batchErrors.noDeployment(job.model));
    const taskId = `task_${uuid()}`;
    let placement: Placement;
    try {
      placement = await this.host.place({
        ...placeFields(job, taskId),
        modelRecord: model,
        deployments,
      });
    } catch (e) {
      this.host.log.warn("job.unplaced", { requestId, jobId, ...errorFields(e) });
      return fail(batchErrors.unplaced(job.model));
    }
    if (placement.mode !== "colocated") return fail(batchErrors.notColocated());
    const t = placement.colocated;
    if (!this.isLive(jobId)) return; // cancelled while it was placed
    const startedAt = Date.now();
    this.host.ctx.storage.transactionSync(() => {
      sql.exec(
        "INSERT INTO tasks (id, job_id, request_id, role, status, instance_id, npu, queued_at) VALUES (?, ?, ?, 'colocated', 'queued', ?, ?, ?)",
        taskId,
        jobId,
        requestId,
        t.instanceId,
        t.npu,
        startedAt,
      );
      const set = `status = ${KEEP_TERMINAL}, started_at = COALESCE(started_at, ?)`;
      this.updateBoth(jobId, requestId, set, "running", startedAt);
    });
    const npu = this.host.env.NPU.getByName(t.npu);
    const res = await npu.generate({ ...generateTask(job, taskId), r2Key: model.r2Key });
    if (!res.ok) {
      sql.exec(
        `UPDATE tasks SET status = ${KEEP_TERMINAL}, error = ?, finished_at = ? WHERE id = ?`,
        "failed",
        res.error.message,
        Date.now(),
        taskId,
      );
      if (requeuesOn(res.error)) return this.requeue(jobId);
      return fail(res.error);
    }
    this.host.log.info("task.dispatched", { requestId, jobId, taskId, instanceId: t.instanceId });
    if (!this.isLive(jobId)) {
      // cancelled while generate() was on its way: the cancel could not find the task yet
      await npu.cancel({ taskId, reason: "request cancelled" }).catch(() => {});
      await res.value.stream.cancel().catch(() => {});
      return;
    }
    const events = tapFirstToken(decodeEvents(res.value.stream.getReader()), () => {
      const set = "first_token_at = COALESCE(first_token_at, ?)";
      this.updateBoth(jobId, requestId, set, Date.now());
    });
    const out = await collectResponse(events, responseMeta(job, uuid(), startedAt));
    if (!out.ok) return fail(out.error);
    const stored = storedResult(out.body);
    if (!stored.ok) return fail(stored.error);
    this.finish(jobId, requestId, { resultJson: stored.json });
  }

  /** Applies `SET <set>` to the job's row and its request's. */
  private updateBoth(jobId: string, requestId: string, set: string, ...args: SqlStorageValue[]) {
    this.sql.exec(`UPDATE jobs SET ${set} WHERE id = ?`, ...args, jobId);
    this.sql.exec(`UPDATE requests SET ${set} WHERE id = ?`, ...args, requestId);
  }

  /** An instance had no room: the job goes back to the front of the queue and new jobs wait. */
  private requeue(jobId: string): void {
    const sql = this.sql;
    sql.exec(
      `UPDATE jobs SET status = ${KEEP_TERMINAL}, started_at = NULL WHERE id = ?`,
      "queued",
      jobId,
    );
    sql.exec(
      "UPDATE batch_jobs SET state = 'queued', attempts = attempts - 1 WHERE job_id = ? AND state = 'dispatched'",
      jobId,
    );
    this.pausedUntil = capacityPause(Date.now());
  }

  /**
   * Ends a job with its response body or error (a job cancelled meanwhile stays cancelled, with
   * neither), and ends its request when no job is left (see `requestOutcome`).
   */
  private finish(
    jobId: string,
    requestId: string,
    out: { resultJson: string } | { error: ErrorInfo },
  ): void {
    const sql = this.sql;
    const now = Date.now();
    this.host.ctx.storage.transactionSync(() => {
      const live = this.isLive(jobId);
      sql.exec("UPDATE batch_jobs SET state = 'done' WHERE job_id = ?", jobId);
      if (!live) return;
      const ok = "resultJson" in out;
      sql.exec(
        "UPDATE batch_jobs SET result = ?, error = ? WHERE job_id = ?",
        ok ? out.resultJson : null,
        ok ? null : JSON.stringify(storedError(out.error)),
        jobId,
      );
      sql.exec(
        "UPDATE jobs SET status = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
        ok ? "succeeded" : "failed",
        now,
        jobId,
      );
      const groups = sql
        .exec(
          "SELECT status, COUNT(*) AS n FROM jobs WHERE request_id = ? GROUP BY status",
          requestId,
        )
        .toArray()
        .map((g) => ({ status: g.status as JobStatus, n: g.n as number }));
      const end = requestOutcome(jobCounts(groups));
      if (!end) return;
      sql.exec(
        `UPDATE requests SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status NOT IN ${TERMINAL}`,
        end.status,
        now,
        end.error,
        requestId,
      );
    });
    if ("error" in out) {
      this.host.log.info("job.failed", { requestId, jobId, kind: out.error.kind });
    }
  }
}
