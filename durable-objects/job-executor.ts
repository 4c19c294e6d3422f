/**
 * JobExecutor: DeepFlow's JE, sharded by request id. Turns a request into a job and its tasks
 * (job-submission.ts): admits and plans it (job-planner.ts: the model records the ClusterManager
 * pushes, one tokenisation, the context check, Algorithm 1 over the load its instances push with
 * their task reports, no RPC per instance) and records it (records.ts); applies its instances' task reports
 * (task-reports.ts), migrates a job whose instance failed (job-migrations.ts) and keeps the
 * context caches (context-cache-routes.ts). Batch jobs run from here (batch-runner.ts) through the same
 * planning and the same dispatch (shared/serving/dispatch.ts) as interactive ones. One alarm
 * serves every timer (alarm-timers.ts): snapshots, batches, the watchdog, held failures and
 * idempotency keys.
 */
import { DurableObject } from "cloudflare:workers";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { Logger, parseLogLevel } from "../shared/log.ts";
import type { ResumeJob, SubmitJob, Submitted } from "../shared/protocol/messages.ts";
import type { DecisionSummary } from "../shared/serving/decision-log.ts";
import type { Claim } from "../shared/serving/idempotency.ts";
import type { MetricsSnapshot } from "../shared/serving/metrics.ts";
import { prefixStrideBlocks } from "../shared/serving/prefix-tree.ts";
import { type Admission, TenantLimiter } from "../shared/serving/tenant-limits.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type { ContextCacheRecord, RequestRecord } from "../shared/types/records.ts";
import { AlarmTimers } from "./alarm-timers.ts";
import { BatchRunner, type BatchSubmit } from "./batch-runner.ts";
import { ContextCacheRoutes } from "./context-cache-routes.ts";
import type { NewContextCache } from "./context-caches.ts";
import { type Env, getConfig } from "./env.ts";
import { FaultSwitch } from "./faults.ts";
import { IdempotencyKeys, type KeyRef } from "./idempotency-keys.ts";
import { JobMigrations } from "./job-migrations.ts";
import { JobPlanner } from "./job-planner.ts";
import { JobSubmission } from "./job-submission.ts";
import { ModelDirectory } from "./model-directory.ts";
import { PlacementState } from "./placement-state.ts";
import { RecordStore } from "./records.ts";
import { type TaskEvent, TaskReports } from "./task-reports.ts";
import { TaskWatchdog } from "./task-watchdog.ts";

/** Longest a request waits for its deployment to scale from zero (then 503, Retry-After). */
const SCALE_FROM_ZERO_TIMEOUT_MS = 30_000;

export class JobExecutor extends DurableObject<Env> {
  readonly #log: Logger;
  readonly #records: RecordStore;
  readonly #caches: ContextCacheRoutes;
  readonly #batches: BatchRunner;
  readonly #models: ModelDirectory;
  readonly #placement: PlacementState;
  readonly #planner: JobPlanner;
  readonly #submission: JobSubmission;
  readonly #reports: TaskReports;
  readonly #keys: IdempotencyKeys;
  /** Rate and concurrency of the tenants this shard owns (in memory: a restart forgets them). */
  readonly #limiter: TenantLimiter;
  readonly #watchdog: TaskWatchdog;
  readonly #faults: FaultSwitch;
  readonly #migrations: JobMigrations;
  readonly #timers: AlarmTimers;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#log = new Logger(
      { do: "JobExecutor", name: ctx.id.name ?? null },
      parseLogLevel(env.LOG_LEVEL),
    );
    this.#timers = new AlarmTimers({
      ctx,
      log: this.#log,
      snapshot: () => this.#placement.snapshot(),
      rounds: [
        () => {
          this.#batches.alarm();
          return null;
        },
        async () => {
          await this.#watchdog.check();
          return null;
        },
        () => this.#migrations.releaseExpired(Date.now()),
        () => this.#keys.expire(Date.now()),
      ],
    });
    this.#records = new RecordStore(ctx.storage, this.#log);
    this.#models = new ModelDirectory(env);
    this.#keys = new IdempotencyKeys(ctx.storage.sql);
    this.#limiter = new TenantLimiter(getConfig(env).tenantLimits);
    this.#faults = new FaultSwitch(ctx, env, this.#log);
    this.#watchdog = new TaskWatchdog({
      env,
      log: this.#log,
      records: this.#records,
      arm: (at) => this.#timers.arm(at),
      recovered: (npu) => this.#placement.markHealthy(npu),
      fail: (task, reason) =>
        this.taskEvent({
          requestId: task.requestId,
          taskId: task.id,
          status: "failed",
          finishedAt: Date.now(),
          error: reason,
          instanceFailure: true,
        }),
    });
    // start-up reconciliation: tasks live in storage are checked within a watchdog interval
    if (this.#records.read().watchedTasks().length > 0) this.#watchdog.arm();
    const config = getConfig(env);
    this.#placement = new PlacementState(
      env,
      ctx.storage.kv,
      config.blockSize,
      prefixStrideBlocks(config.prefixIndexTokens, config.blockSize),
    );
    this.#reports = new TaskReports({
      log: this.#log,
      records: this.#records,
      placement: this.#placement,
      models: this.#models,
      env,
      waitUntil: (p) => ctx.waitUntil(p),
      changed: () => this.#timers.scheduleSnapshot(),
    });
    this.#planner = new JobPlanner({
      log: this.#log,
      models: this.#models,
      placement: this.#placement,
      contextCache: (id, tenant) => this.#caches.lookup(id, tenant),
      changed: () => this.#timers.scheduleSnapshot(),
    });
    this.#migrations = new JobMigrations({
      log: this.#log,
      records: this.#records,
      arm: (at) => this.#timers.arm(at),
      apply: (requestId, taskId, p, mirror) =>
        this.#reports.apply({ requestId, taskId, ...p }, mirror),
      plan: (spec, deploymentId, attempt, exclude) =>
        this.#planner.planAttempt(spec, deploymentId, attempt, exclude),
    });
    this.#migrations.restoreHeld(Date.now());
    this.#caches = new ContextCacheRoutes({
      env,
      log: this.#log,
      sql: ctx.storage.sql,
      shardName: ctx.id.name,
      models: this.#models,
      placement: this.#placement,
      scaleFromZero: (d) => this.#models.scaleFromZero(d, SCALE_FROM_ZERO_TIMEOUT_MS),
    });
    this.#batches = new BatchRunner({
      ctx,
      env,
      log: this.#log,
      records: this.#records,
      plan: (s, attempt) => this.#planner.plan(s, attempt),
      model: (name) => this.#models.get(name),
      scaleFromZero: (d) => this.#models.scaleFromZero(d, SCALE_FROM_ZERO_TIMEOUT_MS),
      unplan: (taskId) => this.#placement.forget(taskId),
      onTaskEvent: (e) => this.taskEvent(e),
    });
    this.#submission = new JobSubmission({
      planner: this.#planner,
      records: this.#records,
      migrations: this.#migrations,
      watchdog: this.#watchdog,
      scaleFromZero: (d) => this.#models.scaleFromZero(d, SCALE_FROM_ZERO_TIMEOUT_MS),
    });
  }

  /**
   * Admits a job (its model, the deployments it may use, a context cache it continues), plans it
   * (tokenise, check, place) and records the request, its job and its tasks (job-submission.ts).
   * Unknown models, bad input and capacity failures come back as values, and then nothing is
   * recorded.
   */
  async submit(s: SubmitJob): Promise<Result<Submitted>> {
    this.#faults.check("JobExecutor.submit");
    return this.#submission.submit(s);
  }

  /** The ClusterManager's news of a model (uploaded, re-uploaded, deployments changed). */
  async modelChanged(m: { name: string; record: ModelRecord | null }): Promise<void> {
    this.#models.put(m.name, m.record);
  }

  override async alarm(): Promise<void> {
    await this.#timers.fire();
  }

  /** A drill's fault (POST /api/faults): the next submit throws, or the object is reset. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.#faults.inject(q.fault);
  }

  // --- per-tenant limits (the shard that owns the tenant; shared/serving/tenant-limits.ts)

  /** Admits a request of the tenant (a slot until releaseTenantSlot) or says when to retry. */
  async acquireTenantSlot(q: { tenant: string }): Promise<Admission> {
    return this.#limiter.acquire(q.tenant, Date.now());
  }

  async releaseTenantSlot(q: { tenant: string; slotId: number }): Promise<void> {
    this.#limiter.release(q.tenant, q.slotId);
  }

  // --- idempotency keys (per tenant, kept IDEMPOTENCY_TTL_MS; shared/serving/idempotency.ts)

  /** Claims a tenant's key for a request, or says what the key's first request left. */
  async claimIdempotencyKey(q: KeyRef & { fingerprint: string }): Promise<Claim> {
    const { claim, expiresAt } = this.#keys.claim({ ...q, now: Date.now() });
    if (claim.kind === "claimed") this.#timers.arm(expiresAt);
    return claim;
  }

  /** Stores the response of the request that claimed the key, for replay. */
  async completeIdempotencyKey(
    q: KeyRef & { status: number; contentType: string; body: string },
  ): Promise<void> {
    this.#keys.complete(q);
  }

  /** Frees a key whose request got no replayable answer. */
  async releaseIdempotencyKey(q: KeyRef): Promise<void> {
    this.#keys.release(q);
  }

  /**
   * An instance's report on a task: applied to the records, its load noted, the prefix tree
   * taught the prompt once the task runs, and the predictor the output length once it ends.
   */
  async taskEvent(e: TaskEvent): Promise<void> {
    this.#reports.apply(e, this.#migrations.mirrorOf(e.taskId, e));
  }

  /**
   * The next attempt of a job whose instance failed under it (the worker saw its stream's
   * error): planned on another instance of its deployment, recorded, or an error value.
   */
  async resume(q: ResumeJob): Promise<Result<Submitted>> {
    const r = await this.#migrations.resume(q);
    if (r.ok) this.#watchdog.arm();
    return r;
  }

  /** This shard's metrics (GET /metrics merges every shard's). */
  async metrics(): Promise<MetricsSnapshot> {
    return this.#placement.metrics.snapshot();
  }

  /** This shard's last placements, newest first (GET /api/scheduler/decisions). */
  async decisions(q: { limit: number }): Promise<DecisionSummary[]> {
    return this.#placement.decisions.recent(q.limit);
  }

  /** Records a batch request (one queued job per item) and runs its jobs in the background. */
  async submitBatch(b: BatchSubmit): Promise<void> {
    this.#batches.submit(b);
  }

  /**
   * Cancels a request: queued jobs are cancelled, running tasks cancelled on their Npus. Returns
   * the record; not_found for an unknown or another tenant's request, conflict once finished.
   */
  async cancelRequest(q: { requestId: string; tenant: string }): Promise<Result<RequestRecord>> {
    const r = await this.#batches.cancel(q);
    if (!r.ok) return r;
    const record = await this.getRequest(q);
    if (!record) return failure(errorInfo("not_found", `No request ${q.requestId}.`));
    return { ok: true, value: record };
  }

  /** The request with its jobs and tasks, or null when unknown or owned by another tenant. */
  async getRequest(q: { requestId: string; tenant: string }): Promise<RequestRecord | null> {
    return this.#request(q.requestId, q.tenant);
  }

  /** Any tenant's request (admin routes only), or null when unknown. */
  async getRequestAnyTenant(q: { requestId: string }): Promise<RequestRecord | null> {
    return this.#request(q.requestId, null);
  }

  #request(requestId: string, tenant: string | null): RequestRecord | null {
    const record = this.#records.read().get(requestId, tenant);
    if (!record) return null;
    return record.kind === "batch" ? this.#batches.decorate(record) : record;
  }

  // --- explicit context caches (DeepFlow's RTC by id), tenant-scoped (context-cache-routes.ts)

  /** Creates a context cache (prefix tokenised, KV pinned on an instance); errors as values. */
  async createContextCache(c: NewContextCache): Promise<Result<ContextCacheRecord>> {
    return this.#caches.create(c);
  }

  /** The tenant's context cache, or null when unknown, expired or another tenant's. */
  async getContextCache(q: { id: string; tenant: string }): Promise<ContextCacheRecord | null> {
    return this.#caches.get(q.id, q.tenant);
  }

  async deleteContextCache(q: { id: string; tenant: string }): Promise<boolean> {
    return this.#caches.delete(q.id, q.tenant);
  }
}
