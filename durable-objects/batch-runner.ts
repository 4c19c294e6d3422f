/**
 * DeepFlow's batch-inference job kind inside the JobExecutor: the queue (batch-queue.ts, one row
 * per item) and its driving — dispatch under bounded concurrency, the watchdog alarm that lets
 * a restarted JE resume its queue, and each job's outcome (its collected OpenAI response body
 * stored as its result, or its error, or a retry). One job's placement on a colocated deployment
 * and its run with `Npu.generate` are batch-job.ts. Also cancels requests of any kind. The rules
 * (what to start, recover, store, and when a request ends) are pure, in shared/serving/batch.ts. The JE owns this object; it must not import workers/.
 */
import type { ErrorInfo, Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import type { Submitted } from "../shared/protocol/messages.ts";
import {
  type BatchSubmit,
  cancelRefusal,
  capacityPause,
  decorateBatch,
  dispatchSlots,
  interruptedJobs,
  jobCounts,
  jobKind,
  recoverJob,
  requestOutcome,
  retryOf,
  shouldSetAlarm,
  storedError,
  watchdogAt,
} from "../shared/serving/batch.ts";
import type { DeploymentRecord, ModelRecord } from "../shared/types/deployments.ts";
import type { RequestRecord } from "../shared/types/records.ts";
import { cancelTask, isLive, runJob } from "./batch-job.ts";
import { BatchQueue } from "./batch-queue.ts";
import type { Env } from "./env.ts";
import type { PlanInput } from "./model-scheduler.ts";
import type { RecordStore } from "./records.ts";
import type { TaskEvent } from "./task-reports.ts";

export type { BatchJobSpec, BatchSubmit } from "../shared/serving/batch.ts";

/** What the runner needs from its JobExecutor. */
export interface BatchHost {
  ctx: DurableObjectState;
  env: Env;
  log: Logger;
  records: RecordStore;
  /** The JE's planning (tokenise, check, Algorithm 1) for attempt `attempt`; records nothing. */
  plan(s: PlanInput, attempt: number): Promise<Result<Submitted>>;
  /** The model's record as the JobExecutor knows it (null: no such model). */
  model(name: string): Promise<ModelRecord | null>;
  /** Scales a deployment with no serving instance from zero and waits for it. */
  scaleFromZero(d: DeploymentRecord): Promise<Result<{ coldStartMs: number }>>;
  /** Drops what planning a task left behind when the task will never run. */
  unplan(taskId: string): void;
  /** The JE's handling of a task report (records, load, prefix tree). */
  onTaskEvent(e: TaskEvent): Promise<void>;
}

export class BatchRunner {
  /** Job ids this isolate is running; a `dispatched` row not in here was cut off by a restart. */
  private readonly inFlight = new Set<string>();
  private pausedUntil = 0;

  private readonly queue: BatchQueue;

  constructor(private readonly host: BatchHost) {
    this.queue = new BatchQueue(host.ctx.storage.sql);
  }

  private get records(): RecordStore {
    return this.host.records;
  }

  /** Records a batch request with one queued job per item and starts running them. */
  submit(b: BatchSubmit): void {
    const request = {
      id: b.requestId,
      tenant: b.tenant,
      model: b.model,
      kind: "batch" as const,
      clientRequestId: b.clientRequestId,
      receivedAt: b.receivedAt,
    };
    const jobs = b.jobs.map((j) => ({ id: j.jobId, kind: jobKind(j.kind) }));
    this.records.create(request, jobs, [], () => this.queue.enqueue(b.requestId, b.jobs));
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
    const refusal = cancelRefusal(
      q.requestId,
      this.records.read().requestStatus(q.requestId, q.tenant),
    );
    if (refusal) return { ok: false, error: refusal };
    const live = this.records.read().liveTasks("request_id", q.requestId);
    this.records.transaction(() => {
      this.records.cancel(q.requestId, Date.now());
      this.queue.dropQueued(q.requestId);
    });
    await Promise.allSettled(live.map((t) => cancelTask(this.host.env, t, "request cancelled")));
    const numTasksCancelled = live.length;
    this.host.log.info("request.cancelled", { requestId: q.requestId, numTasksCancelled });
    return { ok: true, value: null };
  }

  /** A batch request's record with each job's index, result or error, and the job counts. */
  decorate(rec: RequestRecord): RequestRecord {
    return decorateBatch(rec, this.queue.rows(rec.id));
  }

  // --- the queue

  /** Starts queued jobs (oldest first) while there are free slots. */
  private kick(): void {
    const slots = dispatchSlots({
      inFlight: this.inFlight.size,
      now: Date.now(),
      pausedUntil: this.pausedUntil,
    });
    for (const jobId of this.queue.queued(slots)) this.dispatch(jobId);
    this.arm();
  }

  /** Marks the job dispatched (one more attempt) and runs it in the background. */
  private dispatch(jobId: string): void {
    this.queue.markDispatched(jobId);
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
    const now = Date.now();
    const at = watchdogAt({
      pending: this.queue.hasPending(),
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
    for (const j of interruptedJobs(this.queue.dispatched(), this.inFlight)) {
      const { jobId, requestId, attempts } = j;
      const tasks = this.records.read().liveTasks("job_id", jobId);
      this.records.failTasks(jobId, "job executor restarted", Date.now());
      for (const t of tasks) {
        this.host.ctx.waitUntil(
          cancelTask(this.host.env, t, "job executor restarted").catch(() => {}),
        );
      }
      const next = recoverJob(j);
      if (next.action === "fail") {
        this.finish(jobId, requestId, { error: next.error });
      } else {
        this.records.requeueJob(jobId);
        this.queue.setState(jobId, next.state);
      }
      this.host.log.warn("job.requeued", { requestId, jobId, attempts });
    }
  }

  // --- one job

  /** Runs the job (batch-job.ts) and records how it ended: its response, error or retry. */
  private async run(jobId: string): Promise<void> {
    const row = this.queue.job(jobId);
    const owner = row ? this.records.read().owner(row.requestId) : null;
    if (!row || !owner) return;
    const { requestId } = row;
    if (!isLive(this.records, jobId)) {
      this.queue.setState(jobId, "done");
      return;
    }
    const out = await runJob(this.host, jobId, row, owner);
    if (out.end === "result") this.finish(jobId, requestId, { resultJson: out.resultJson });
    else if (out.end === "fail") this.finish(jobId, requestId, { error: out.error });
    else if (out.end === "retry") this.retryOrFail(jobId, requestId, out.error);
  }

  /**
   * A failed placement or dispatch (`retryOf`): a full instance sends the job back to the front of
   * the queue without using up an attempt; an unreachable or rolling instance sends it back as
   * one more attempt; either way new jobs wait a moment. Anything else fails it.
   */
  private retryOrFail(jobId: string, requestId: string, error: ErrorInfo): void {
    const action = retryOf(error, this.queue.attempts(jobId));
    if (action === "fail") {
      this.finish(jobId, requestId, { error });
      return;
    }
    this.records.requeueJob(jobId);
    this.queue.requeue(jobId, action === "pause"); // a full instance is not the job's attempt
    this.pausedUntil = capacityPause(Date.now()); // give the instance a moment either way
    this.host.log.warn("job.requeued", { requestId, jobId, reason: error.code ?? error.kind });
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
    const now = Date.now();
    this.records.transaction(() => {
      this.queue.setState(jobId, "done");
      const ok = "resultJson" in out;
      if (!this.records.finishJob(jobId, ok ? "succeeded" : "failed", now)) return;
      const errorJson = ok ? null : JSON.stringify(storedError(out.error));
      this.queue.store(jobId, ok ? out.resultJson : null, errorJson);
      const end = requestOutcome(jobCounts(this.records.read().jobStatusCounts(requestId)));
      if (end) this.records.finishRequest(requestId, end.status, end.error, now);
    });
    if ("error" in out) {
      this.host.log.info("job.failed", { requestId, jobId, kind: out.error.kind });
    }
  }
}
