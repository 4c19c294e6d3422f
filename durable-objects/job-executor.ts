/**
 * JobExecutor: DeepFlow's JE, sharded by request id. Turns requests into jobs and tasks, places
 * tasks on instances, and keeps the request/job/task records (tenant-scoped) in SQLite so they
 * survive restarts. Placement policy is pure (shared/serving/placement.ts); this is the shell.
 */
import { DurableObject } from "cloudflare:workers";
import { Logger, parseLogLevel } from "../shared/log.ts";
import { npuName } from "../shared/protocol/names.ts";
import { type LoadSnapshot, load, pickLeastLoaded } from "../shared/serving/placement.ts";
import type {
  JobRecord,
  RequestRecord,
  RequestStatus,
  TaskRecord,
  TaskRole,
} from "../shared/types/records.ts";
import type { Env } from "../workers/env.ts";
import type { DeploymentRecord } from "./cluster-manager.ts";

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
  /** Candidate deployments (one when the request pins it). */
  deployments: DeploymentRecord[];
  /** Sequences the request needs (PD groups serve one). */
  numSeqs: number;
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
CREATE INDEX IF NOT EXISTS tasks_by_request ON tasks(request_id);`;

export class JobExecutor extends DurableObject<Env> {
  private readonly log: Logger;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger(
      { do: "JobExecutor", name: ctx.id.name ?? null },
      parseLogLevel(env.LOG_LEVEL),
    );
    ctx.storage.sql.exec(SCHEMA);
  }

  /**
   * Records a request with one job and places it: chooses a deployment and the instance(s)
   * for its task(s). Policy: the least-loaded colocated instance across colocated deployments;
   * a PD deployment when it is the only candidate (or pinned), with the least-loaded prefill and
   * decode instances. (DeepFlow's Algorithm 1 replaces this in shared/serving/scheduling.ts.)
   */
  async submit(r: SubmitRequest): Promise<Placement> {
    const snapshot = async (instanceId: string): Promise<LoadSnapshot> => {
      const s = await this.env.NPU.getByName(npuName(instanceId)).stats();
      return {
        instanceId,
        numRunning: s.numRunning,
        numWaiting: s.numWaiting,
        numFreeBlocks: s.numFreeBlocks,
      };
    };
    const colocated = r.deployments.filter((d) => d.mode === "colocated");
    const pd = r.deployments.filter(
      (d) => d.mode === "pd" && (r.numSeqs === 1 || r.deployments.length === 1),
    );
    let placement: Placement;
    let scores: { instanceId: string; load: number }[];
    const place = (taskId: string, s: LoadSnapshot): TaskPlacement => ({
      taskId,
      instanceId: s.instanceId,
      npu: npuName(s.instanceId),
    });
    if (colocated.length > 0 || pd.length === 0) {
      const pool = colocated.flatMap((d) => d.instances.colocated.map((id) => ({ d, id })));
      if (pool.length === 0) throw new Error("no colocated instances to place the task on");
      const loads = await Promise.all(pool.map((p) => snapshot(p.id)));
      const best = pickLeastLoaded(loads);
      const dep = pool[loads.indexOf(best)]?.d as DeploymentRecord;
      placement = {
        mode: "colocated",
        deploymentId: dep.id,
        colocated: place(r.taskIds.colocated, best),
      };
      scores = loads.map((l) => ({ instanceId: l.instanceId, load: load(l) }));
    } else {
      const dep = pd[0] as DeploymentRecord;
      const [pre, dec] = await Promise.all([
        Promise.all(dep.instances.prefill.map(snapshot)),
        Promise.all(dep.instances.decode.map(snapshot)),
      ]);
      placement = {
        mode: "pd",
        deploymentId: dep.id,
        prefill: place(r.taskIds.prefill, pickLeastLoaded(pre)),
        decode: place(r.taskIds.decode, pickLeastLoaded(dec)),
      };
      scores = [...pre, ...dec].map((l) => ({ instanceId: l.instanceId, load: load(l) }));
    }
    this.log.info("scheduler.decided", {
      requestId: r.requestId,
      policy: "least-loaded",
      mode: placement.mode,
      deploymentId: placement.deploymentId,
      scores,
    });
    this.record(r, placement);
    return placement;
  }

  private record(r: SubmitRequest, p: Placement): void {
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
    const task = sql.exec("SELECT job_id FROM tasks WHERE id = ?", e.taskId).toArray()[0];
    if (!task) return;
    const sets: string[] = [];
    const args: SqlStorageValue[] = [];
    const put = (col: string, v: SqlStorageValue | undefined) => {
      if (v === undefined) return;
      sets.push(`${col} = COALESCE(${col}, ?)`);
      args.push(v);
    };
    put("started_at", e.startedAt);
    put("first_token_at", e.firstTokenAt);
    put("finished_at", e.finishedAt);
    const statusSet = e.status ? ["status = ?"] : [];
    const statusArg = e.status ? [e.status] : [];
    this.ctx.storage.transactionSync(() => {
      const taskSets = [...sets, ...statusSet];
      const taskArgs = [...args, ...statusArg];
      if (e.numPromptTokens !== undefined) {
        taskSets.push("num_prompt_tokens = ?");
        taskArgs.push(e.numPromptTokens);
      }
      if (e.numCompletionTokens !== undefined) {
        taskSets.push("num_completion_tokens = ?");
        taskArgs.push(e.numCompletionTokens);
      }
      if (e.error !== undefined) {
        taskSets.push("error = ?");
        taskArgs.push(e.error);
      }
      if (taskSets.length === 0) return;
      sql.exec(`UPDATE tasks SET ${taskSets.join(", ")} WHERE id = ?`, ...taskArgs, e.taskId);
      const mirror = [...sets, ...statusSet];
      if (mirror.length === 0) return;
      sql.exec(
        `UPDATE jobs SET ${mirror.join(", ")} WHERE id = ?`,
        ...args,
        ...statusArg,
        task.job_id as string,
      );
      const reqSets = e.error !== undefined ? [...mirror, "error = ?"] : mirror;
      const reqArgs =
        e.error !== undefined ? [...args, ...statusArg, e.error] : [...args, ...statusArg];
      sql.exec(`UPDATE requests SET ${reqSets.join(", ")} WHERE id = ?`, ...reqArgs, e.requestId);
    });
    if (e.status && e.status !== "running") {
      this.log.info("task.completed", {
        requestId: e.requestId,
        taskId: e.taskId,
        status: e.status,
      });
    }
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
    return {
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
