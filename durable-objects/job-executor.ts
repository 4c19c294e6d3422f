/**
 * JobExecutor: DeepFlow's JE, sharded by request id. Turns a request into a job and its tasks
 * (job-submission.ts): admits and plans it (job-planner.ts: the model records the ClusterManager
 * pushes, one tokenisation, the context check, Algorithm 1 over the load its instances push with
 * their task reports, no RPC per instance) and records it (records.ts); applies its instances' task reports
 * (task-reports.ts), migrates a job whose instance failed (job-migrations.ts) and keeps the
 * context caches (context-cache-routes.ts). Batch jobs run from here (batch-runner.ts) through the same
 * planning and the same dispatch (shared/serving/dispatch.ts) as interactive ones. One alarm
 * serves every timer (alarm-timers.ts): snapshots, batches, the watchdog, held failures and
 * idempotency keys. job-executor-parts.ts builds and wires these parts; this class is their RPC
 * surface.
 */
import { DurableObject } from "cloudflare:workers";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { ResumeJob, SubmitJob, Submitted } from "../shared/protocol/messages.ts";
import type { DecisionSummary } from "../shared/serving/decision-log.ts";
import type { Claim } from "../shared/serving/idempotency.ts";
import type { MetricsSnapshot } from "../shared/serving/metrics.ts";
import type { Admission } from "../shared/serving/tenant-limits.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type { ContextCacheRecord, RequestRecord } from "../shared/types/records.ts";
import type { BatchSubmit } from "./batch-runner.ts";
import type { NewContextCache } from "./context-caches.ts";
import type { Env } from "./env.ts";
import type { KeyRef } from "./idempotency-keys.ts";
import { type JobExecutorParts, jobExecutorParts } from "./job-executor-parts.ts";
import type { TaskEvent } from "./task-reports.ts";

export class JobExecutor extends DurableObject<Env> {
  readonly #p: JobExecutorParts;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#p = jobExecutorParts(ctx, env, (e) => this.taskEvent(e));
  }

  /**
   * Admits a job (its model, the deployments it may use, a context cache it continues), plans it
   * (tokenise, check, place) and records the request, its job and its tasks (job-submission.ts).
   * Unknown models, bad input and capacity failures come back as values, and then nothing is
   * recorded.
   */
  async submit(s: SubmitJob): Promise<Result<Submitted>> {
    this.#p.faults.check("JobExecutor.submit");
    return this.#p.submission.submit(s);
  }

  /** The ClusterManager's news of a model (uploaded, re-uploaded, deployments changed). */
  async modelChanged(m: { name: string; record: ModelRecord | null }): Promise<void> {
    this.#p.models.put(m.name, m.record);
  }

  override async alarm(): Promise<void> {
    await this.#p.timers.fire();
  }

  /** A drill's fault (POST /api/faults): the next submit throws, or the object is reset. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.#p.faults.inject(q.fault);
  }

  // --- per-tenant limits (the shard that owns the tenant; shared/serving/tenant-limits.ts)

  /** Admits a request of the tenant (a slot until releaseTenantSlot) or says when to retry. */
  async acquireTenantSlot(q: { tenant: string }): Promise<Admission> {
    return this.#p.limiter.acquire(q.tenant, Date.now());
  }

  async releaseTenantSlot(q: { tenant: string; slotId: number }): Promise<void> {
    this.#p.limiter.release(q.tenant, q.slotId);
  }

  // --- idempotency keys (per tenant, kept IDEMPOTENCY_TTL_MS; shared/serving/idempotency.ts)

  /** Claims a tenant's key for a request, or says what the key's first request left. */
  async claimIdempotencyKey(q: KeyRef & { fingerprint: string }): Promise<Claim> {
    const { claim, expiresAt } = this.#p.keys.claim({ ...q, now: Date.now() });
    if (claim.kind === "claimed") this.#p.timers.arm(expiresAt);
    return claim;
  }

  /** Stores the response of the request that claimed the key, for replay. */
  async completeIdempotencyKey(
    q: KeyRef & { status: number; contentType: string; body: string },
  ): Promise<void> {
    this.#p.keys.complete(q);
  }

  /** Frees a key whose request got no replayable answer. */
  async releaseIdempotencyKey(q: KeyRef): Promise<void> {
    this.#p.keys.release(q);
  }

  /**
   * An instance's report on a task: applied to the records, its load noted, the prefix tree
   * taught the prompt once the task runs, and the predictor the output length once it ends.
   */
  async taskEvent(e: TaskEvent): Promise<void> {
    this.#p.reports.apply(e, this.#p.migrations.mirrorOf(e.taskId, e));
  }

  /**
   * The next attempt of a job whose instance failed under it (the worker saw its stream's
   * error): planned on another instance of its deployment, recorded, or an error value.
   */
  async resume(q: ResumeJob): Promise<Result<Submitted>> {
    const r = await this.#p.migrations.resume(q);
    if (r.ok) this.#p.watchdog.arm();
    return r;
  }

  /** This shard's metrics (GET /metrics merges every shard's). */
  async metrics(): Promise<MetricsSnapshot> {
    return this.#p.placement.metrics.snapshot();
  }

  /** This shard's last placements, newest first (GET /api/scheduler/decisions). */
  async decisions(q: { limit: number }): Promise<DecisionSummary[]> {
    return this.#p.placement.decisions.recent(q.limit);
  }

  /** Records a batch request (one queued job per item) and runs its jobs in the background. */
  async submitBatch(b: BatchSubmit): Promise<void> {
    this.#p.batches.submit(b);
  }

  /**
   * Cancels a request: queued jobs are cancelled, running tasks cancelled on their Npus. Returns
   * the record; not_found for an unknown or another tenant's request, conflict once finished.
   */
  async cancelRequest(q: { requestId: string; tenant: string }): Promise<Result<RequestRecord>> {
    const r = await this.#p.batches.cancel(q);
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
    const record = this.#p.records.read().get(requestId, tenant);
    if (!record) return null;
    return record.kind === "batch" ? this.#p.batches.decorate(record) : record;
  }

  // --- explicit context caches (DeepFlow's RTC by id), tenant-scoped (context-cache-routes.ts)

  /** Creates a context cache (prefix tokenised, KV pinned on an instance); errors as values. */
  async createContextCache(c: NewContextCache): Promise<Result<ContextCacheRecord>> {
    return this.#p.caches.create(c);
  }

  /** The tenant's context cache, or null when unknown, expired or another tenant's. */
  async getContextCache(q: { id: string; tenant: string }): Promise<ContextCacheRecord | null> {
    return this.#p.caches.get(q.id, q.tenant);
  }

  async deleteContextCache(q: { id: string; tenant: string }): Promise<boolean> {
    return this.#p.caches.delete(q.id, q.tenant);
  }
}
