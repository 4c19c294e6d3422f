/**
 * DeepFlow's batch-inference job kind inside the JobExecutor: a batch request is one job per item,
 * queued in SQLite (`batch_jobs`) and run in the background with bounded concurrency. Each job is
 * placed with the JE's scheduler on a colocated deployment, run with `Npu.generate`, and its event
 * stream is collected into the OpenAI response body that is stored as the job's result. An alarm
 * re-arms while work remains, so a restarted JE resumes its queue. Also cancels requests of any
 * kind. The JE owns this object; it must not import workers/ (types only).
 */
import { type ErrorInfo, errorEnvelope, errorInfo, type Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { EventDecoder } from "../shared/protocol/codec.ts";
import type {
  GenerateEvent,
  GenerateInput,
  GenerateSampling,
} from "../shared/protocol/messages.ts";
import { CLUSTER_MANAGER_NAME } from "../shared/protocol/names.ts";
import { PROTOCOL_VERSION } from "../shared/protocol/version.ts";
import { collectResponse } from "../shared/serving/openai-response.ts";
import type {
  BatchJobError,
  JobCounts,
  JobStatus,
  RequestRecord,
} from "../shared/types/records.ts";
import type { Env } from "./env.ts";
import type { Placement, SubmitRequest } from "./job-executor.ts";

/** Batch jobs in flight per JobExecutor (across all its batch requests). */
export const BATCH_CONCURRENCY = 4;
/** While batch work remains, the alarm fires at least this often (restart recovery). */
const WATCHDOG_MS = 30_000;
/** After an instance answered 429, new batch jobs wait this long. */
const CAPACITY_BACKOFF_MS = 1_000;
/** A job interrupted by this many JE restarts is failed instead of run again. */
const MAX_ATTEMPTS = 3;
/** Largest stored result (JSON bytes); a bigger body is replaced by a `result_too_large` error. */
export const MAX_RESULT_BYTES = 256 * 1024;

export const BATCH_SCHEMA = `
CREATE TABLE IF NOT EXISTS batch_jobs (
  job_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL, result TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS batch_jobs_by_state ON batch_jobs(state);
CREATE INDEX IF NOT EXISTS batch_jobs_by_request ON batch_jobs(request_id, idx);`;

/** One item of a batch: what its job generates. */
export interface BatchJobSpec {
  jobId: string;
  kind: "chat" | "completion";
  input: GenerateInput;
  /** Choices per prompt. */
  n: number;
  maxTokens: number | null;
  sampling: GenerateSampling;
}

export interface BatchSubmit {
  requestId: string;
  tenant: string;
  model: string;
  clientRequestId: string | null;
  receivedAt: number;
  jobs: BatchJobSpec[];
}

/** What the runner needs from its JobExecutor. */
export interface BatchHost {
  ctx: DurableObjectState;
  env: Env;
  log: Logger;
  /** The JE's placement (DeepFlow's Algorithm 1); records nothing. */
  place(r: SubmitRequest): Promise<Placement>;
}

const TERMINAL = "('succeeded', 'failed', 'cancelled')";
const KEEP_TERMINAL = `CASE WHEN status IN ${TERMINAL} THEN status ELSE ? END`;

function uuid(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

/** Decodes an Npu's NDJSON event stream; leaving early cancels it. */
async function* decodeEvents(stream: ReadableStream<Uint8Array>): AsyncGenerator<GenerateEvent> {
  const decoder = new EventDecoder();
  const reader = stream.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      yield* decoder.push(value);
    }
    yield* decoder.push(new TextEncoder().encode("\n"));
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Passes the events on, calling `onFirst` at the first generated text. */
async function* tapFirstToken(
  events: AsyncIterable<GenerateEvent>,
  onFirst: () => void,
): AsyncGenerator<GenerateEvent> {
  let first = true;
  for await (const e of events) {
    if (first && e.type === "delta") {
      first = false;
      onFirst();
    }
    yield e;
  }
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
          j.kind === "chat" ? "chat.completion" : "text_completion",
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
    this.host.log.info("job.created", {
      requestId: b.requestId,
      kind: "batch",
      numJobs: b.jobs.length,
    });
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
    if (!r) {
      const msg = `No request with id ${q.requestId}.`;
      return { ok: false, error: errorInfo("not_found", msg, "id", "request_not_found") };
    }
    if (r.status === "succeeded" || r.status === "failed" || r.status === "cancelled") {
      const msg = `Request ${q.requestId} has already finished (${r.status}); it cannot be cancelled.`;
      return { ok: false, error: errorInfo("conflict", msg, "id", "request_already_finished") };
    }
    const now = Date.now();
    const live = sql
      .exec(
        `SELECT id, npu FROM tasks WHERE request_id = ? AND status NOT IN ${TERMINAL}`,
        q.requestId,
      )
      .toArray();
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
    await Promise.allSettled(
      live.map((t) =>
        this.host.env.NPU.getByName(t.npu as string).cancel({
          taskId: t.id as string,
          reason: "request cancelled",
        }),
      ),
    );
    this.host.log.info("request.cancelled", {
      requestId: q.requestId,
      numTasksCancelled: live.length,
    });
    return { ok: true, value: null };
  }

  /** A batch request's record with each job's index, result or error, and the job counts. */
  decorate(rec: RequestRecord): RequestRecord {
    const rows = this.sql
      .exec(
        "SELECT job_id, idx, result, error FROM batch_jobs WHERE request_id = ? ORDER BY idx",
        rec.id,
      )
      .toArray();
    const byId = new Map(rec.jobs.map((j) => [j.id, j]));
    const jobCounts: JobCounts = {
      total: 0,
      queued: 0,
      running: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
    };
    const jobs = rows.flatMap((row) => {
      const j = byId.get(row.job_id as string);
      if (!j) return [];
      jobCounts.total++;
      jobCounts[j.status]++;
      const parse = <T>(v: SqlStorageValue | undefined) =>
        typeof v === "string" ? (JSON.parse(v) as T) : null;
      return [
        {
          ...j,
          index: row.idx as number,
          result: parse<object>(row.result),
          error: parse<BatchJobError>(row.error),
        },
      ];
    });
    return { ...rec, jobs, jobCounts };
  }

  // --- the queue

  /** Starts queued jobs (oldest first) while there are free slots. */
  private kick(): void {
    const sql = this.sql;
    while (this.inFlight.size < BATCH_CONCURRENCY && Date.now() >= this.pausedUntil) {
      const row = sql
        .exec("SELECT job_id FROM batch_jobs WHERE state = 'queued' ORDER BY rowid LIMIT 1")
        .toArray()[0];
      if (!row) break;
      const jobId = row.job_id as string;
      sql.exec(
        "UPDATE batch_jobs SET state = 'dispatched', attempts = attempts + 1 WHERE job_id = ?",
        jobId,
      );
      this.inFlight.add(jobId);
      this.host.ctx.waitUntil(
        this.run(jobId)
          .catch((e: unknown) => {
            this.host.log.error("error.unhandled", {
              where: "batch job",
              jobId,
              ...errorFields(e),
            });
          })
          .finally(() => {
            this.inFlight.delete(jobId);
            this.kick();
          }),
      );
    }
    this.arm();
  }

  /** Keeps an alarm set while batch work remains (the watchdog that resumes after a restart). */
  private arm(): void {
    const queued = this.sql
      .exec("SELECT 1 FROM batch_jobs WHERE state != 'done' LIMIT 1")
      .toArray().length;
    if (queued === 0 && this.inFlight.size === 0) return;
    const now = Date.now();
    const at = this.pausedUntil > now ? this.pausedUntil : now + WATCHDOG_MS;
    const storage = this.host.ctx.storage;
    this.host.ctx.waitUntil(
      (async () => {
        const current = await storage.getAlarm();
        if (current === null || current > at) await storage.setAlarm(at);
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
    const stale = sql
      .exec("SELECT job_id, request_id, attempts FROM batch_jobs WHERE state = 'dispatched'")
      .toArray()
      .filter((r) => !this.inFlight.has(r.job_id as string));
    for (const r of stale) {
      const jobId = r.job_id as string;
      const requestId = r.request_id as string;
      const now = Date.now();
      const tasks = sql
        .exec(`SELECT id, npu FROM tasks WHERE job_id = ? AND status NOT IN ${TERMINAL}`, jobId)
        .toArray();
      sql.exec(
        `UPDATE tasks SET status = 'failed', error = 'job executor restarted', finished_at = ? WHERE job_id = ? AND status NOT IN ${TERMINAL}`,
        now,
        jobId,
      );
      for (const t of tasks) {
        this.host.ctx.waitUntil(
          this.host.env.NPU.getByName(t.npu as string)
            .cancel({ taskId: t.id as string, reason: "job executor restarted" })
            .catch(() => {}),
        );
      }
      if ((r.attempts as number) >= MAX_ATTEMPTS) {
        const msg = `The job was interrupted ${MAX_ATTEMPTS} times by restarts of its executor.`;
        this.finish(jobId, requestId, {
          error: errorInfo("internal", msg, null, "job_interrupted"),
        });
      } else {
        sql.exec(
          `UPDATE jobs SET status = ${KEEP_TERMINAL}, started_at = NULL, first_token_at = NULL WHERE id = ?`,
          "queued",
          jobId,
        );
        sql.exec(
          "UPDATE batch_jobs SET state = CASE WHEN result IS NULL AND error IS NULL THEN 'queued' ELSE 'done' END WHERE job_id = ?",
          jobId,
        );
      }
      this.host.log.warn("job.requeued", { requestId, jobId, attempts: r.attempts as number });
    }
  }

  // --- one job

  private jobStatus(jobId: string): JobStatus | null {
    const row = this.sql.exec("SELECT status FROM jobs WHERE id = ?", jobId).toArray()[0];
    return row ? (row.status as JobStatus) : null;
  }

  private isLive(jobId: string): boolean {
    const s = this.jobStatus(jobId);
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
    const spec = JSON.parse(row.spec as string) as BatchJobSpec;
    const tenant = row.tenant as string;
    const name = row.model as string;
    const cluster = this.host.env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);
    const model = await cluster.getModel({ name });
    if (!model) {
      const msg = `The model \`${name}\` does not exist.`;
      return fail(errorInfo("not_found", msg, "model", "model_not_found"));
    }
    const deployments = model.deployments.filter((d) => d.mode === "colocated");
    if (deployments.length === 0) {
      const msg = `No colocated deployment of model ${name} serves batch jobs.`;
      return fail(errorInfo("overloaded", msg, null, "no_deployment"));
    }
    const taskId = `task_${uuid()}`;
    const numSeqs = (spec.input.kind === "completion" ? spec.input.prompts.length : 1) * spec.n;
    let placement: Placement;
    try {
      placement = await this.host.place({
        requestId,
        jobId,
        taskIds: { colocated: taskId, prefill: taskId, decode: taskId },
        tenant,
        model: name,
        kind: spec.kind === "chat" ? "chat.completion" : "text_completion",
        clientRequestId: null,
        receivedAt: row.received_at as number,
        modelRecord: model,
        deployments,
        numSeqs,
        input: spec.input,
        maxTokens: spec.maxTokens,
      });
    } catch (e) {
      this.host.log.warn("job.unplaced", { requestId, jobId, ...errorFields(e) });
      return fail(errorInfo("overloaded", `No instance of model ${name} can serve this job.`));
    }
    if (placement.mode !== "colocated") {
      return fail(errorInfo("internal", "A batch job must be placed on a colocated instance."));
    }
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
      sql.exec(
        `UPDATE jobs SET status = ${KEEP_TERMINAL}, started_at = COALESCE(started_at, ?) WHERE id = ?`,
        "running",
        startedAt,
        jobId,
      );
      sql.exec(
        `UPDATE requests SET status = ${KEEP_TERMINAL}, started_at = COALESCE(started_at, ?) WHERE id = ?`,
        "running",
        startedAt,
        requestId,
      );
    });
    const npu = this.host.env.NPU.getByName(t.npu);
    const res = await npu.generate({
      protocolVersion: PROTOCOL_VERSION,
      requestId,
      jobId,
      taskId,
      tenant,
      model: name,
      input: spec.input,
      n: spec.n,
      maxTokens: spec.maxTokens,
      sampling: spec.sampling,
      r2Key: model.r2Key,
    });
    if (!res.ok) {
      sql.exec(
        `UPDATE tasks SET status = ${KEEP_TERMINAL}, error = ?, finished_at = ? WHERE id = ?`,
        "failed",
        res.error.message,
        Date.now(),
        taskId,
      );
      if (res.error.kind === "capacity") return this.requeue(jobId);
      return fail(res.error);
    }
    this.host.log.info("task.dispatched", { requestId, jobId, taskId, instanceId: t.instanceId });
    if (!this.isLive(jobId)) {
      // cancelled while generate() was on its way: the cancel could not find the task yet
      await npu.cancel({ taskId, reason: "request cancelled" }).catch(() => {});
      await res.value.stream.cancel().catch(() => {});
      return;
    }
    const meta = {
      id: `${spec.kind === "chat" ? "chatcmpl" : "cmpl"}-${uuid()}`,
      created: Math.floor(startedAt / 1000),
      model: name,
      kind: spec.kind,
      numChoices: numSeqs,
      logprobs: spec.sampling.logprobs,
    };
    const events = tapFirstToken(decodeEvents(res.value.stream), () => {
      const now = Date.now();
      for (const [table, id] of [
        ["jobs", jobId],
        ["requests", requestId],
      ] as const) {
        sql.exec(
          `UPDATE ${table} SET first_token_at = COALESCE(first_token_at, ?) WHERE id = ?`,
          now,
          id,
        );
      }
    });
    const out = await collectResponse(events, meta);
    if (!out.ok) return fail(out.error);
    const json = JSON.stringify(out.body);
    if (new TextEncoder().encode(json).byteLength > MAX_RESULT_BYTES) {
      const msg = `The job's response is larger than the ${MAX_RESULT_BYTES} bytes a batch job stores.`;
      return fail(errorInfo("invalid_request", msg, null, "result_too_large"));
    }
    this.finish(jobId, requestId, { resultJson: json });
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
    this.pausedUntil = Date.now() + CAPACITY_BACKOFF_MS;
  }

  /**
   * Ends a job with its response body or error (a job cancelled meanwhile stays cancelled, with
   * neither), and ends its request when no job is left: succeeded when any job succeeded, failed
   * when every job failed.
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
        ok ? null : JSON.stringify(errorEnvelope(out.error).error),
        jobId,
      );
      sql.exec(
        "UPDATE jobs SET status = ?, finished_at = COALESCE(finished_at, ?) WHERE id = ?",
        ok ? "succeeded" : "failed",
        now,
        jobId,
      );
      const left = sql
        .exec(
          "SELECT COUNT(*) AS n FROM jobs WHERE request_id = ? AND status IN ('queued', 'running')",
          requestId,
        )
        .one();
      if ((left.n as number) > 0) return;
      const succeeded = sql
        .exec(
          "SELECT COUNT(*) AS n FROM jobs WHERE request_id = ? AND status = 'succeeded'",
          requestId,
        )
        .one().n as number;
      sql.exec(
        `UPDATE requests SET status = ?, finished_at = ?, error = ? WHERE id = ? AND status NOT IN ${TERMINAL}`,
        succeeded > 0 ? "succeeded" : "failed",
        now,
        succeeded > 0 ? null : "every job of the batch failed; see each job's error",
        requestId,
      );
    });
    if ("error" in out) {
      this.host.log.info("job.failed", { requestId, jobId, kind: out.error.kind });
    }
  }
}
