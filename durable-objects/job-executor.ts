/**
 * JobExecutor: DeepFlow's JE, sharded by request id. Turns requests into jobs and tasks, places
 * tasks on instances, and keeps the request/job/task records (tenant-scoped) in SQLite so they
 * survive restarts. Placement policy is pure (shared/serving/scheduling.ts); this is the shell.
 */
import { DurableObject } from "cloudflare:workers";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { Logger, parseLogLevel } from "../shared/log.ts";
import type { GenerateInput, GenerateTask } from "../shared/protocol/messages.ts";
import { npuName } from "../shared/protocol/names.ts";
import {
  chooseLeastLoaded,
  type DeploymentState,
  type InstanceState,
} from "../shared/serving/scheduling.ts";
import { DEFAULT_COMPLETION_MAX_TOKENS } from "../shared/serving/task.ts";
import type {
  JobRecord,
  RequestRecord,
  RequestStatus,
  TaskRecord,
  TaskRole,
} from "../shared/types/records.ts";
import { BATCH_SCHEMA, BatchRunner, type BatchSubmit, KEEP_TERMINAL } from "./batch-runner.ts";
import type { DeploymentRecord, ModelRecord } from "./cluster-manager.ts";
import { type Env, getConfig } from "./env.ts";
import { ModelScheduler, type SchedulerSnapshot } from "./model-scheduler.ts";

export interface SubmitRequest {
  requestId: string;
  jobId: string;
  /** Task ids minted by the frontend: one for a colocated job, prefill + decode for PD. */
  taskIds: { colocated: string; prefill: string; decode: string };
  tenant: string;
  model: string;
  kind: string;
  clientRequestId: string | null;
  receivedAt: number;
  /** The model's registry record (weights generation, PD profile). */
  modelRecord: ModelRecord;
  /** Candidate deployments (one when the request pins it). */
  deployments: DeploymentRecord[];
  /** Sequences the request needs (PD groups serve one). */
  numSeqs: number;
  /** What to generate from, to key the prompt's KV blocks for locality. */
  input: GenerateInput;
  maxTokens: number | null;
  /** Place on this instance (a context cache's): no scheduling decision. */
  pinned?: { deploymentId: string; instanceId: string };
}

export interface TaskPlacement {
  taskId: string;
  instanceId: string;
  npu: string;
}

export type Placement =
  | { mode: "colocated"; deploymentId: string; colocated: TaskPlacement }
  | { mode: "pd"; deploymentId: string; prefill: TaskPlacement; decode: TaskPlacement };

export interface TaskEvent {
  requestId: string;
  taskId: string;
  status?: RequestStatus;
  startedAt?: number;
  firstTokenAt?: number;
  finishedAt?: number;
  numPromptTokens?: number;
  numCompletionTokens?: number;
  error?: string;
}

type Row = Record<string, SqlStorageValue>;

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
  first_token_at INTEGER, finished_at INTEGER);
CREATE INDEX IF NOT EXISTS jobs_by_request ON jobs(request_id);
CREATE INDEX IF NOT EXISTS tasks_by_request ON tasks(request_id);
${BATCH_SCHEMA}`;

const CONTEXT_CACHE_SCHEMA = `CREATE TABLE IF NOT EXISTS context_caches (id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER NOT NULL);`;

/** An explicit context cache: a prompt prefix whose KV is pinned on one instance. */
export interface ContextCacheRecord {
  id: string;
  object: "context_cache";
  model: string;
  deploymentId: string;
  instanceId: string;
  /** The cached prefix as sent (prompt or messages); requests that use it continue it. */
  input: GenerateInput;
  numTokens: number;
  /** Tokens held in pinned full KV blocks. */
  numCachedTokens: number;
  createdAt: number;
  expiresAt: number;
}

function taskPlacement(taskId: string, instanceId: string): TaskPlacement {
  return { taskId, instanceId, npu: npuName(instanceId) };
}

/** Delay before scheduling state is snapshotted to storage. */
const SNAPSHOT_DELAY_MS = 5_000;

export class JobExecutor extends DurableObject<Env> {
  private readonly log: Logger;
  private readonly schedulers = new Map<string, ModelScheduler>();
  private readonly batches: BatchRunner;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger(
      { do: "JobExecutor", name: ctx.id.name ?? null },
      parseLogLevel(env.LOG_LEVEL),
    );
    ctx.storage.sql.exec(SCHEMA);
    ctx.storage.sql.exec(CONTEXT_CACHE_SCHEMA);
    this.batches = new BatchRunner({
      ctx,
      env,
      log: this.log,
      place: (r) => this.#place(r),
    });
  }

  /**
   * Records a request with one job and places it with DeepFlow's Algorithm 1 (or the baseline
   * its deployments name): the deployment (colocated vs PD from the profile heatmap and the
   * predicted output length), then the instance (longest cached prefix when the group is
   * balanced, else the least loaded). One log line per decision carries the scores.
   */
  async submit(r: SubmitRequest): Promise<Placement> {
    if (r.pinned) {
      const placement: Placement = {
        mode: "colocated",
        deploymentId: r.pinned.deploymentId,
        colocated: taskPlacement(r.taskIds.colocated, r.pinned.instanceId),
      };
      this.log.info("scheduler.decided", {
        requestId: r.requestId,
        reason: "context-cache",
        ...r.pinned,
      });
      this.#record(r, placement);
      return placement;
    }
    const placement = await this.#place(r);
    this.#record(r, placement);
    return placement;
  }

  /**
   * DeepFlow's Algorithm 1 for one job (one log line with its scores). Records no job; the
   * scheduling state it changed is snapshotted a little later.
   */
  async #place(r: SubmitRequest): Promise<Placement> {
    // a PD group serves one sequence (the frontend refuses a pinned PD group for more)
    const deployments = r.deployments.filter((d) => d.mode === "colocated" || r.numSeqs === 1);
    const sched = await this.#scheduler(r.modelRecord);
    const promptIds = sched.promptIds(r.input);
    const states = await Promise.all(deployments.map((d) => this.#deploymentState(d)));
    const chat = r.input.kind === "chat";
    const context = r.modelRecord.summary.contextLength;
    const maxTokens =
      r.maxTokens ??
      (chat ? Math.max(context - promptIds.length, 1) : DEFAULT_COMPLETION_MAX_TOKENS);
    const result = sched.place(states, promptIds, maxTokens, Date.now());
    if (!result) throw new Error(`no deployment of ${r.model} can serve this request`);
    const d = result.decision;
    const placement: Placement =
      d.mode === "pd"
        ? {
            mode: "pd",
            deploymentId: d.deploymentId,
            prefill: taskPlacement(r.taskIds.prefill, d.prefillInstanceId as string),
            decode: taskPlacement(r.taskIds.decode, d.decodeInstanceId as string),
          }
        : {
            mode: "colocated",
            deploymentId: d.deploymentId,
            colocated: taskPlacement(r.taskIds.colocated, d.instanceId as string),
          };
    this.log.info("scheduler.decided", { requestId: r.requestId, ...d });
    this.#scheduleSnapshot();
    return placement;
  }

  /** The live state of a deployment's instances (one stats RPC each). */
  async #deploymentState(d: DeploymentRecord): Promise<DeploymentState> {
    const roles = ["colocated", "prefill", "decode"] as const;
    const instances = await Promise.all(
      roles.flatMap((role) =>
        d.instances[role].map(async (instanceId): Promise<InstanceState> => {
          const s = await this.env.NPU.getByName(npuName(instanceId)).stats();
          return {
            instanceId,
            role,
            numRunning: s.numRunning,
            numWaiting: s.numWaiting,
            numFreeBlocks: s.numFreeBlocks,
            numOutstandingTokens: s.numOutstandingTokens,
          };
        }),
      ),
    );
    return { deploymentId: d.id, mode: d.mode, policy: d.scheduler, instances };
  }

  /** The scheduling state of a model's current weights, restored from storage on first use. */
  async #scheduler(m: ModelRecord): Promise<ModelScheduler> {
    let s = this.schedulers.get(m.name);
    if (!s || s.generation !== m.generation) {
      s = new ModelScheduler(m.name, m.generation, getConfig(this.env).blockSize);
      const saved = this.ctx.storage.kv.get<SchedulerSnapshot>(`sched/${m.name}`);
      if (saved) s.restore(saved);
      this.schedulers.set(m.name, s);
    }
    s.profile = m.pdProfile;
    await s.ensureTokenizer(this.env.MODELS, m);
    return s;
  }

  /** Snapshots changed scheduling state a few seconds later (one write for many requests). */
  #scheduleSnapshot(): void {
    this.ctx.waitUntil(
      (async () => {
        if ((await this.ctx.storage.getAlarm()) === null)
          await this.ctx.storage.setAlarm(Date.now() + SNAPSHOT_DELAY_MS);
      })(),
    );
  }

  override async alarm(): Promise<void> {
    for (const s of this.schedulers.values()) {
      if (!s.dirty) continue;
      s.dirty = false;
      this.ctx.storage.kv.put(`sched/${s.model}`, s.snapshot());
    }
    this.batches.alarm();
  }

  #record(r: SubmitRequest, p: Placement): void {
    const now = Date.now();
    const sql = this.ctx.storage.sql;
    const tasks: [TaskRole, TaskPlacement][] =
      p.mode === "colocated"
        ? [["colocated", p.colocated]]
        : [
            ["prefill", p.prefill],
            ["decode", p.decode],
          ];
    this.ctx.storage.transactionSync(() => {
      sql.exec(
        "INSERT INTO requests (id, tenant, model, kind, status, client_request_id, received_at, queued_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
        r.requestId,
        r.tenant,
        r.model,
        r.kind,
        r.clientRequestId,
        r.receivedAt,
        now,
      );
      sql.exec(
        "INSERT INTO jobs (id, request_id, kind, status, queued_at) VALUES (?, ?, ?, 'queued', ?)",
        r.jobId,
        r.requestId,
        r.kind,
        now,
      );
      for (const [role, t] of tasks) {
        sql.exec(
          "INSERT INTO tasks (id, job_id, request_id, role, status, instance_id, npu, queued_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
          t.taskId,
          r.jobId,
          r.requestId,
          role,
          t.instanceId,
          t.npu,
          now,
        );
      }
    });
    this.log.info("job.created", {
      requestId: r.requestId,
      jobId: r.jobId,
      mode: p.mode,
      numTasks: tasks.length,
    });
  }

  /** Applies a task's progress and mirrors it onto its job and request (one task per job here). */
  async taskEvent(e: TaskEvent): Promise<void> {
    const sql = this.ctx.storage.sql;
    const task = sql
      .exec(
        "SELECT t.job_id AS job_id, t.role AS role, r.model AS model, r.kind AS request_kind FROM tasks t JOIN requests r ON r.id = t.request_id WHERE t.id = ?",
        e.taskId,
      )
      .toArray()[0];
    if (!task) return;
    // A job ends with its last task (colocated, or decode for PD); any task failing fails it.
    // Timestamps keep their first value; a terminal status is never overwritten (reports are
    // fire-and-forget RPCs and may arrive out of order).
    const ends = task.role !== "prefill" || e.status === "failed" || e.status === "cancelled";
    const update = (table: string, id: string, own: boolean) => {
      const sets: string[] = [];
      const args: SqlStorageValue[] = [];
      const put = (col: string, v: SqlStorageValue | undefined, first = true) => {
        if (v === undefined) return;
        sets.push(first ? `${col} = COALESCE(${col}, ?)` : `${col} = ?`);
        args.push(v);
      };
      put("started_at", e.startedAt);
      put("first_token_at", e.firstTokenAt);
      if (own || ends) put("finished_at", e.finishedAt);
      if (e.status && (own || ends || e.status === "running")) {
        sets.push(`status = ${KEEP_TERMINAL}`);
        args.push(e.status);
      }
      if (own) {
        put("num_prompt_tokens", e.numPromptTokens, false);
        put("num_completion_tokens", e.numCompletionTokens, false);
      }
      if (e.error !== undefined && (own || table === "requests")) put("error", e.error);
      if (sets.length > 0)
        sql.exec(`UPDATE ${table} SET ${sets.join(", ")} WHERE id = ?`, ...args, id);
    };
    this.ctx.storage.transactionSync(() => {
      update("tasks", e.taskId, true);
      // a batch's jobs and request are kept by its runner (batch-runner.ts)
      if (task.request_kind === "batch") return;
      update("jobs", task.job_id as string, false);
      update("requests", e.requestId, false);
    });
    if (e.status && e.status !== "running") {
      this.log.info("task.completed", {
        requestId: e.requestId,
        taskId: e.taskId,
        role: task.role,
        status: e.status,
      });
    }
    // the predictor learns output lengths from finished generating tasks (not prefill tasks)
    const done = e.status === "succeeded" && task.role !== "prefill";
    if (done && e.numPromptTokens !== undefined && e.numCompletionTokens !== undefined) {
      this.schedulers.get(task.model as string)?.observe(e.numPromptTokens, e.numCompletionTokens);
    }
  }

  /** Records a batch request (one queued job per item) and runs its jobs in the background. */
  async submitBatch(b: BatchSubmit): Promise<void> {
    this.batches.submit(b);
  }

  /**
   * Cancels a request: queued jobs are cancelled, running tasks cancelled on their Npus. Returns
   * the record; not_found for an unknown or another tenant's request, conflict once finished.
   */
  async cancelRequest(q: { requestId: string; tenant: string }): Promise<Result<RequestRecord>> {
    const r = await this.batches.cancel(q);
    if (!r.ok) return r;
    const record = await this.getRequest(q);
    if (!record) return { ok: false, error: errorInfo("not_found", `No request ${q.requestId}.`) };
    return { ok: true, value: record };
  }

  /** The request with its jobs and tasks, or null when unknown or owned by another tenant. */
  async getRequest(q: { requestId: string; tenant: string }): Promise<RequestRecord | null> {
    const sql = this.ctx.storage.sql;
    const r = sql
      .exec("SELECT * FROM requests WHERE id = ? AND tenant = ?", q.requestId, q.tenant)
      .toArray()[0];
    if (!r) return null;
    const tasks = sql
      .exec("SELECT * FROM tasks WHERE request_id = ? ORDER BY queued_at, id", q.requestId)
      .toArray();
    const jobs = sql
      .exec("SELECT * FROM jobs WHERE request_id = ? ORDER BY queued_at, id", q.requestId)
      .toArray()
      .map(
        (j): JobRecord => ({
          id: j.id as string,
          requestId: q.requestId,
          kind: j.kind as string,
          status: j.status as RequestStatus,
          ...times(j),
          tasks: tasks.filter((t) => t.job_id === j.id).map(toTask),
        }),
      );
    const record: RequestRecord = {
      id: r.id as string,
      object: "request",
      tenant: r.tenant as string,
      model: r.model as string,
      kind: r.kind as string,
      status: r.status as RequestStatus,
      clientRequestId: (r.client_request_id as string | null) ?? null,
      error: (r.error as string | null) ?? null,
      receivedAt: r.received_at as number,
      ...times(r),
      jobs,
    };
    return record.kind === "batch" ? this.batches.decorate(record) : record;
  }

  // --- explicit context caches (DeepFlow's RTC by id), tenant-scoped

  /**
   * Creates a context cache: pins the prompt's KV on an instance of a colocated deployment of the
   * model (the least loaded) and records it. Errors from the Npu come back as values.
   */
  async createContextCache(c: {
    id: string;
    tenant: string;
    modelRecord: ModelRecord;
    task: GenerateTask;
    ttlMs: number;
  }): Promise<Result<ContextCacheRecord>> {
    const pool = c.modelRecord.deployments.filter((d) => d.mode === "colocated");
    const states = await Promise.all(pool.map((d) => this.#deploymentState(d)));
    const instances = states.flatMap((d) => d.instances.map((i) => ({ d, i })));
    if (instances.length === 0) {
      return failure(
        errorInfo("overloaded", "the model has no colocated instance for a context cache"),
      );
    }
    const chosen = chooseLeastLoaded(instances.map((x) => x.i)).instanceId;
    const best = instances.find((x) => x.i.instanceId === chosen) as (typeof instances)[number];
    const now = Date.now();
    const expiresAt = now + c.ttlMs;
    const pinned = await this.env.NPU.getByName(npuName(best.i.instanceId)).pinPrefix({
      cacheId: c.id,
      task: c.task,
      r2Key: c.modelRecord.r2Key,
      expiresAt,
    });
    if (!pinned.ok) return pinned;
    const record: ContextCacheRecord = {
      id: c.id,
      object: "context_cache",
      model: c.modelRecord.name,
      deploymentId: best.d.deploymentId,
      instanceId: best.i.instanceId,
      input: c.task.input,
      numTokens: pinned.value.numTokens,
      numCachedTokens: pinned.value.numPinnedTokens,
      createdAt: now,
      expiresAt,
    };
    this.ctx.storage.sql.exec(
      "INSERT INTO context_caches (id, tenant, record, expires_at) VALUES (?, ?, ?, ?)",
      c.id,
      c.tenant,
      JSON.stringify(record),
      expiresAt,
    );
    this.log.info("context_cache.created", {
      cacheId: c.id,
      instanceId: best.i.instanceId,
      numTokens: record.numTokens,
    });
    return { ok: true, value: record };
  }

  /** The tenant's context cache, or null when unknown, expired or another tenant's. */
  async getContextCache(q: { id: string; tenant: string }): Promise<ContextCacheRecord | null> {
    const row = this.ctx.storage.sql
      .exec(
        "SELECT record, expires_at FROM context_caches WHERE id = ? AND tenant = ?",
        q.id,
        q.tenant,
      )
      .toArray()[0];
    if (!row) return null;
    if (Number(row.expires_at) <= Date.now()) {
      this.ctx.storage.sql.exec("DELETE FROM context_caches WHERE id = ?", q.id);
      return null;
    }
    return JSON.parse(row.record as string) as ContextCacheRecord;
  }

  async deleteContextCache(q: { id: string; tenant: string }): Promise<boolean> {
    const rec = await this.getContextCache(q);
    if (!rec) return false;
    this.ctx.storage.sql.exec("DELETE FROM context_caches WHERE id = ?", q.id);
    await this.env.NPU.getByName(npuName(rec.instanceId)).unpinPrefix({ cacheId: q.id });
    return true;
  }
}

function num(v: SqlStorageValue | undefined): number | null {
  return v === null || v === undefined ? null : Number(v);
}

function times(r: Row) {
  return {
    queuedAt: num(r.queued_at),
    startedAt: num(r.started_at),
    firstTokenAt: num(r.first_token_at),
    finishedAt: num(r.finished_at),
  };
}

function toTask(t: Row): TaskRecord {
  return {
    id: t.id as string,
    jobId: t.job_id as string,
    role: t.role as TaskRole,
    status: t.status as RequestStatus,
    instanceId: t.instance_id as string,
    npu: t.npu as string,
    numPromptTokens: num(t.num_prompt_tokens),
    numCompletionTokens: num(t.num_completion_tokens),
    error: (t.error as string | null) ?? null,
    ...times(t),
  };
}
