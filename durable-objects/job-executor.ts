/**
 * JobExecutor: DeepFlow's JE, sharded by request id. Turns a request into a job and its tasks:
 * renders and tokenises the prompt once (the task carries the ids to the Npu), checks the
 * context, places the tasks with Algorithm 1 over the load its instances push with their task
 * reports (no RPC per instance), and keeps the records (records.ts) and context caches
 * (context-caches.ts). Batch jobs run from here (batch-runner.ts) through the same planning and
 * the same dispatch (shared/serving/dispatch.ts) as interactive ones.
 */
import { DurableObject } from "cloudflare:workers";
import type { EngineStats } from "../shared/engine/engine.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { errorFields, Logger, parseLogLevel } from "../shared/log.ts";
import type { SubmitJob, Submitted } from "../shared/protocol/messages.ts";
import { jobExecutorName, npuName, requestShard } from "../shared/protocol/names.ts";
import {
  chooseDeployments,
  continueContextCache,
  modelOrNotFound,
  numSeqsOf,
} from "../shared/serving/admission.ts";
import {
  DecisionLog,
  type DecisionSummary,
  summarizeDecision,
} from "../shared/serving/decision-log.ts";
import { placedTasks } from "../shared/serving/dispatch.ts";
import { ESTIMATE_TTL_MS, LoadTable } from "../shared/serving/load-table.ts";
import type { MetricsSnapshot } from "../shared/serving/metrics.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import type { DeploymentState, InstanceState } from "../shared/serving/scheduling.ts";
import {
  analyticsPoint,
  type NpuCounters,
  ServingMetrics,
} from "../shared/serving/serving-metrics.ts";
import type { DeploymentRecord, ModelRecord } from "../shared/types/deployments.ts";
import type { ContextCacheRecord, RequestRecord } from "../shared/types/records.ts";
import { BATCH_SCHEMA, BatchRunner, type BatchSubmit } from "./batch-runner.ts";
import { ContextCacheStore, createContextCache, type NewContextCache } from "./context-caches.ts";
import { type Env, getConfig } from "./env.ts";
import { ModelDirectory } from "./model-directory.ts";
import { ModelScheduler, type PlanInput, type SchedulerSnapshot } from "./model-scheduler.ts";
import { RecordStore } from "./records.ts";

/** An instance's report on one of its tasks, with its load at that moment. */
export interface TaskEvent extends TaskProgress {
  requestId: string;
  taskId: string;
  load?: EngineStats;
  /** The instance's running totals (preemptions, fabric), for /metrics. */
  counters?: NpuCounters;
}

/** Delay before scheduling state is snapshotted to storage. */
const SNAPSHOT_DELAY_MS = 5_000;
/** Storage key of the metrics snapshot. */
const METRICS_KEY = "metrics";

export class JobExecutor extends DurableObject<Env> {
  readonly #log: Logger;
  readonly #schedulers = new Map<string, ModelScheduler>();
  readonly #records: RecordStore;
  readonly #caches: ContextCacheStore;
  readonly #batches: BatchRunner;
  readonly #load = new LoadTable();
  readonly #models: ModelDirectory;
  /** Placed tasks whose prompt the prefix tree learns once the instance accepts them. */
  readonly #learning = new Map<string, { model: string; blockKeys: string[]; at: number }>();
  /** A snapshot alarm is set (or about to be) for changes not yet written. */
  #snapshotArmed = false;
  /** This shard's part of GET /metrics, snapshotted with the scheduling state. */
  readonly #metrics = new ServingMetrics();
  /** The last placements, for the dashboard (in memory only). */
  readonly #decisions = new DecisionLog();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#log = new Logger(
      { do: "JobExecutor", name: ctx.id.name ?? null },
      parseLogLevel(env.LOG_LEVEL),
    );
    this.#records = new RecordStore(ctx.storage, this.#log);
    this.#models = new ModelDirectory(env);
    ctx.storage.sql.exec(BATCH_SCHEMA);
    this.#caches = new ContextCacheStore(ctx.storage.sql);
    const metrics = ctx.storage.kv.get<MetricsSnapshot>(METRICS_KEY);
    if (metrics) this.#metrics.restore(metrics);
    this.#batches = new BatchRunner({
      ctx,
      env,
      log: this.#log,
      records: this.#records,
      plan: (s, attempt) => this.#plan(s, attempt),
      model: (name) => this.#models.get(name),
      unplan: (taskId) => {
        this.#load.forget(taskId);
        this.#learning.delete(taskId);
      },
      onTaskEvent: (e) => this.taskEvent(e),
    });
  }

  /**
   * Admits a job (its model, the deployments it may use, a context cache it continues), plans it
   * (tokenise, check, place) and records the request, its job and its tasks. Unknown models, bad
   * input and capacity failures come back as values, and then nothing is recorded.
   */
  async submit(s: SubmitJob): Promise<Result<Submitted>> {
    const admitted = await this.#admit(s);
    if (!admitted.ok) return admitted;
    const planned = await this.#plan(admitted.value, 0);
    if (!planned.ok) return planned;
    const { placement } = planned.value;
    const tasks = placedTasks(placement).map(([role, t]) => ({
      id: t.taskId,
      jobId: s.spec.jobId,
      requestId: s.spec.requestId,
      role,
      instanceId: t.instanceId,
      npu: t.npu,
    }));
    this.#records.createSoon(
      {
        id: s.spec.requestId,
        tenant: s.spec.tenant,
        model: s.spec.model,
        kind: s.kind,
        clientRequestId: s.clientRequestId,
        receivedAt: s.receivedAt,
      },
      [{ id: s.spec.jobId, kind: s.kind }],
      tasks,
    );
    return planned;
  }

  /** The request's model, deployments and (continuing a context cache) input and instance. */
  async #admit(s: SubmitJob): Promise<Result<PlanInput>> {
    const found = modelOrNotFound(s.spec.model, await this.#models.get(s.spec.model));
    if (!found.ok) return found;
    const model = found.value;
    let spec = s.spec;
    let pinned: PlanInput["pinned"] = null;
    if (s.contextCache !== null) {
      const id = s.contextCache;
      const rec = await this.#contextCache(id, spec.tenant);
      const input = continueContextCache(id, rec, model, s.deployment, spec.input);
      if (!input.ok) return input;
      spec = { ...spec, input: input.value };
      pinned = rec && { deploymentId: rec.deploymentId, instanceId: rec.instanceId };
    }
    const pin = s.deployment;
    const other =
      pin !== null && !model.deployments.some((d) => d.id === pin)
        ? await this.#models.deployment(pin)
        : null;
    const deployments = chooseDeployments(model, pin, numSeqsOf(spec.input, spec.n), other);
    if (!deployments.ok) return deployments;
    return {
      ok: true,
      value: { spec, modelRecord: model, deployments: deployments.value, pinned },
    };
  }

  /** A context cache from the shard that owns its id (this one, or another by RPC). */
  #contextCache(id: string, tenant: string): Promise<ContextCacheRecord | null> {
    const name = jobExecutorName(requestShard(id, getConfig(this.env).jobExecutorShards));
    if (name === this.ctx.id.name) return this.getContextCache({ id, tenant });
    return this.env.JOB_EXECUTOR.getByName(name).getContextCache({ id, tenant });
  }

  /** The ClusterManager's news of a model (uploaded, re-uploaded, deployments changed). */
  async modelChanged(m: { name: string; record: ModelRecord | null }): Promise<void> {
    this.#models.put(m.name, m.record);
  }

  /**
   * Tokenises the job's prompts once, checks them against the context, and places its tasks
   * (DeepFlow's Algorithm 1, one `scheduler.decided` line with its scores). Records nothing; the
   * load table counts the placed work until the instances report it.
   */
  async #plan(s: PlanInput, attempt: number): Promise<Result<Submitted>> {
    const sched = await this.#scheduler(s.modelRecord);
    const states = (numSeqs: number) =>
      // a PD group serves one sequence
      s.deployments
        .filter((d) => d.mode === "colocated" || numSeqs === 1)
        .map((d) => this.#deploymentState(d));
    const planned = sched.plan(s, states, attempt);
    if (!planned.ok) return planned;
    const { submitted, decision, blockKeys, numSeqs, outstanding } = planned.value;
    this.#log.info("scheduler.decided", {
      requestId: s.spec.requestId,
      ...(decision ?? { reason: "context-cache", ...s.pinned }),
    });
    if (decision) this.#scheduleSnapshot();
    const now = Date.now();
    this.#metrics.decided(s.spec.model, decision, now);
    const summary = summarizeDecision(s.spec.requestId, now, s.spec.model, decision, s.pinned);
    if (summary) this.#decisions.record(summary);
    for (const [id, l] of this.#learning) {
      if (now - l.at < ESTIMATE_TTL_MS) break; // insertion order: the oldest come first
      this.#learning.delete(id); // its task never reported
    }
    for (const [role, t] of placedTasks(submitted.placement)) {
      const seqs = role === "prefill" ? 1 : numSeqs;
      this.#load.placed(t.taskId, t.instanceId, seqs, outstanding, now);
      if (role !== "decode") {
        this.#learning.set(t.taskId, { model: s.spec.model, blockKeys, at: now });
      }
    }
    return { ok: true, value: submitted };
  }

  /** A deployment's instances with the load they last pushed (plus work placed since). */
  #deploymentState(d: DeploymentRecord): DeploymentState {
    const roles = ["colocated", "prefill", "decode"] as const;
    const instances = roles.flatMap((role) =>
      d.instances[role].map(
        (instanceId): InstanceState => ({
          instanceId,
          role,
          ...this.#load.load(instanceId),
        }),
      ),
    );
    return { deploymentId: d.id, mode: d.mode, policy: d.scheduler, instances };
  }

  /** The state of a model's current weights (tokenizer included), restored on first use. */
  async #scheduler(m: ModelRecord): Promise<ModelScheduler> {
    let s = this.#schedulers.get(m.name);
    if (!s || s.generation !== m.generation) {
      s = new ModelScheduler(m.name, m.generation, getConfig(this.env).blockSize);
      const saved = this.ctx.storage.kv.get<SchedulerSnapshot>(`sched/${m.name}`);
      if (saved) s.restore(saved);
      this.#schedulers.set(m.name, s);
    }
    s.profile = m.pdProfile;
    await s.ensureTokenizer(this.env.MODELS, m);
    return s;
  }

  /**
   * Snapshots changed scheduling state a few seconds later (one write for many changes): after a
   * placement, and after a task report taught the prefix tree or the predictor.
   */
  #scheduleSnapshot(): void {
    if (this.#snapshotArmed) return;
    this.#snapshotArmed = true;
    this.ctx.waitUntil(
      (async () => {
        if ((await this.ctx.storage.getAlarm()) === null)
          await this.ctx.storage.setAlarm(Date.now() + SNAPSHOT_DELAY_MS);
      })(),
    );
  }

  override async alarm(): Promise<void> {
    this.#snapshotArmed = false;
    this.ctx.storage.kv.put(METRICS_KEY, this.#metrics.snapshot());
    for (const s of this.#schedulers.values()) {
      if (!s.dirty) continue;
      s.dirty = false;
      this.ctx.storage.kv.put(`sched/${s.model}`, s.snapshot());
    }
    this.#batches.alarm();
  }

  /**
   * An instance's report on a task: applied to the records, its load noted, the prefix tree
   * taught the prompt once the task runs, and the predictor the output length once it ends.
   */
  async taskEvent(e: TaskEvent): Promise<void> {
    const { requestId, taskId, load, counters, ...progress } = e;
    const applied = this.#records.applyProgress(taskId, progress);
    if (!applied) {
      this.#load.forget(taskId);
      this.#learning.delete(taskId);
      return;
    }
    this.#load.report(taskId, applied.instanceId, load);
    const now = Date.now();
    this.#metrics.reported(applied.model, applied.instanceId, load, counters, now);
    const learn = this.#learning.get(taskId);
    if (learn && progress.status !== undefined) {
      this.#learning.delete(taskId);
      if (progress.status === "running" || progress.status === "succeeded") {
        this.#schedulers.get(learn.model)?.learn(applied.instanceId, learn.blockKeys, now);
        this.#scheduleSnapshot();
      }
    }
    if (!applied.ended) return;
    const ended = { ...applied, ...progress };
    this.#metrics.taskEnded(ended, now);
    const point = analyticsPoint(ended);
    if (point) this.env.ANALYTICS?.writeDataPoint(point);
    this.#scheduleSnapshot();
    this.#log.debug("task.completed", {
      requestId,
      taskId,
      role: applied.role,
      status: applied.status,
    });
    const done = applied.status === "succeeded" && applied.role !== "prefill";
    if (done && e.numPromptTokens !== undefined && e.numCompletionTokens !== undefined) {
      this.#schedulers.get(applied.model)?.observe(e.numPromptTokens, e.numCompletionTokens);
    }
  }

  /** This shard's metrics (GET /metrics merges every shard's). */
  async metrics(): Promise<MetricsSnapshot> {
    return this.#metrics.snapshot();
  }

  /** This shard's last placements, newest first (GET /api/scheduler/decisions). */
  async decisions(q: { limit: number }): Promise<DecisionSummary[]> {
    return this.#decisions.recent(q.limit);
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
    const record = this.#records.get(requestId, tenant);
    if (!record) return null;
    return record.kind === "batch" ? this.#batches.decorate(record) : record;
  }

  // --- explicit context caches (DeepFlow's RTC by id), tenant-scoped

  /**
   * Creates a context cache: tokenises the prefix, pins its KV on the least loaded instance of a
   * colocated deployment of the model, and records it. Errors come back as values.
   */
  async createContextCache(c: NewContextCache): Promise<Result<ContextCacheRecord>> {
    const m = c.modelRecord;
    return createContextCache(
      {
        env: this.env,
        log: this.#log,
        store: this.#caches,
        pool: m.deployments
          .filter((d) => d.mode === "colocated")
          .map((d) => this.#deploymentState(d)),
        scheduler: await this.#scheduler(m),
      },
      c,
    );
  }

  /** The tenant's context cache, or null when unknown, expired or another tenant's. */
  async getContextCache(q: { id: string; tenant: string }): Promise<ContextCacheRecord | null> {
    return this.#caches.get(q.id, q.tenant, Date.now());
  }

  async deleteContextCache(q: { id: string; tenant: string }): Promise<boolean> {
    const rec = this.#caches.get(q.id, q.tenant, Date.now());
    if (!rec) return false;
    this.#caches.delete(q.id);
    // an unreachable instance has lost its pins already (they live in its memory)
    await this.env.NPU.getByName(npuName(rec.instanceId))
      .unpinPrefix({ cacheId: q.id })
      .catch((e: unknown) => this.#log.warn("context_cache.unpin_failed", errorFields(e)));
    return true;
  }
}
