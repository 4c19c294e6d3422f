/**
 * ClusterManager: the registry of models (GGUF objects in the R2 model registry) and of their
 * deployments (DeepFlow's TE groups: a colocated group, or a PD group of prefill and decode
 * instances). One object for the cluster; its SQLite state survives restarts. The pre-warmed
 * pool and the autoscaler extend this object in later issues.
 */
import { DurableObject } from "cloudflare:workers";
import type { Result } from "../shared/errors.ts";
import { errorFields, Logger, parseLogLevel } from "../shared/log.ts";
import { instanceId, jobExecutorName } from "../shared/protocol/names.ts";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import type {
  DeploymentRecord,
  DeploymentSpec,
  ModelRecord,
  ModelSummary,
} from "../shared/types/deployments.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import { type Env, getConfig } from "./env.ts";
import { FaultSwitch } from "./faults.ts";

type StoredModel = Omit<ModelRecord, "deployments" | "revision">;

export class ClusterManager extends DurableObject<Env> {
  private readonly log: Logger;
  /** The last record revision handed out (see ModelRecord.revision). */
  #revision = 0;
  readonly #faults: FaultSwitch;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger({ do: "ClusterManager" }, parseLogLevel(env.LOG_LEVEL));
    this.#faults = new FaultSwitch(ctx, env, this.log);
    ctx.storage.sql.exec(`
      CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, record TEXT NOT NULL, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, model TEXT NOT NULL, record TEXT NOT NULL,
        created_at INTEGER NOT NULL);`);
  }

  /**
   * Registers (or replaces) a model whose bytes are already in R2 and gives it a colocated
   * deployment. Replacing a model bumps its generation: earlier deployments are retired and new
   * instance ids are used, so no NPU keeps serving old weights.
   */
  async registerModel(m: {
    name: string;
    r2Key: string;
    sizeBytes: number;
    ownedBy: string;
    summary: ModelSummary;
    /** null: no default colocated deployment (the model does not fit one NPU). */
    defaultDeploymentId: string | null;
  }): Promise<ModelRecord> {
    const prev = this.#stored(m.name);
    const generation = prev ? prev.generation + 1 : 0;
    const now = Date.now();
    const record: StoredModel = {
      name: m.name,
      r2Key: m.r2Key,
      sizeBytes: m.sizeBytes,
      ownedBy: m.ownedBy,
      createdAt: prev?.createdAt ?? now,
      summary: m.summary,
      generation,
      pdProfile: null,
    };
    const sql = this.ctx.storage.sql;
    this.ctx.storage.transactionSync(() => {
      sql.exec(
        "INSERT OR REPLACE INTO models (name, record, created_at) VALUES (?, ?, ?)",
        m.name,
        JSON.stringify(record),
        record.createdAt,
      );
      for (const d of this.#deploymentsOf(m.name)) this.#put({ ...d, status: "deleted" });
    });
    if (m.defaultDeploymentId)
      this.#createDeployment({
        id: m.defaultDeploymentId,
        model: m.name,
        mode: "colocated",
        scheduler: "deepflow",
        counts: { colocated: 1, prefill: 0, decode: 0 },
      });
    this.log.info("model.registered", { model: m.name, sizeBytes: m.sizeBytes, generation });
    return this.#publish(m.name) as Promise<ModelRecord>;
  }

  /** A drill's fault (POST /api/faults): the next model read throws, or the object is reset. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.#faults.inject(q.fault);
  }

  async getModel(q: { name: string }): Promise<ModelRecord | null> {
    this.#faults.check("ClusterManager.getModel");
    const s = this.#stored(q.name);
    return s ? this.#withDeployments(s) : null;
  }

  async listModels(): Promise<ModelRecord[]> {
    this.#faults.check("ClusterManager.listModels");
    return this.ctx.storage.sql
      .exec("SELECT record FROM models ORDER BY created_at, name")
      .toArray()
      .map((r) => this.#withDeployments(JSON.parse(r.record as string) as StoredModel));
  }

  /** Stores a model's PD profile (measured for its current weights); false for an unknown model. */
  async setPdProfile(q: { name: string; profile: PdProfile }): Promise<boolean> {
    const s = this.#stored(q.name);
    if (!s) return false;
    const next: StoredModel = { ...s, pdProfile: q.profile };
    this.ctx.storage.sql.exec(
      "UPDATE models SET record = ? WHERE name = ?",
      JSON.stringify(next),
      q.name,
    );
    this.log.info("model.profiled", {
      model: q.name,
      numCells: q.profile.inputBuckets.length * q.profile.outputBuckets.length,
    });
    await this.#publish(q.name);
    return true;
  }

  /** Creates a deployment of a registered model; null when the model is unknown. */
  async addDeployment(spec: DeploymentSpec): Promise<DeploymentRecord | null> {
    if (!this.#stored(spec.model)) return null;
    const d = this.#createDeployment(spec);
    await this.#publish(spec.model);
    return d;
  }

  async getDeployment(q: { id: string }): Promise<DeploymentRecord | null> {
    const row = this.ctx.storage.sql
      .exec("SELECT record FROM deployments WHERE id = ?", q.id)
      .toArray()[0];
    return row ? (JSON.parse(row.record as string) as DeploymentRecord) : null;
  }

  async listDeployments(): Promise<DeploymentRecord[]> {
    return this.ctx.storage.sql
      .exec("SELECT record FROM deployments ORDER BY created_at, id")
      .toArray()
      .map((r) => JSON.parse(r.record as string) as DeploymentRecord)
      .filter((d) => d.status === "active");
  }

  /** Retires a deployment: no new tasks are placed on it; running ones finish. */
  async deleteDeployment(q: { id: string }): Promise<DeploymentRecord | null> {
    const d = await this.getDeployment(q);
    if (!d || d.status === "deleted") return null;
    const out: DeploymentRecord = { ...d, status: "deleted" };
    this.#put(out);
    this.log.info("deployment.deleted", { deploymentId: d.id, model: d.model });
    await this.#publish(d.model);
    return out;
  }

  /**
   * Pushes a model's current record to every JobExecutor shard (they admit requests with it) and
   * returns it. A shard that cannot be reached refreshes on its own within a minute.
   */
  async #publish(name: string): Promise<ModelRecord | null> {
    const s = this.#stored(name);
    const record = s ? this.#withDeployments(s) : null;
    const shards = getConfig(this.env).jobExecutorShards;
    const pushes = Array.from({ length: shards }, (_, i) =>
      this.env.JOB_EXECUTOR.getByName(jobExecutorName(i)).modelChanged({ name, record }),
    );
    for (const r of await Promise.allSettled(pushes)) {
      if (r.status === "rejected") {
        this.log.warn("model.push_failed", { model: name, ...errorFields(r.reason) });
      }
    }
    return record;
  }

  #createDeployment(spec: DeploymentSpec): DeploymentRecord {
    const s = this.#stored(spec.model) as StoredModel;
    const ids = (role: string, n: number) =>
      Array.from({ length: n }, (_, i) => instanceId(`${spec.id}_${role}`, i));
    const record: DeploymentRecord = {
      id: spec.id,
      object: "deployment",
      model: spec.model,
      generation: s.generation,
      mode: spec.mode,
      scheduler: spec.scheduler,
      status: "active",
      createdAt: Date.now(),
      instances: {
        colocated: ids("c", spec.counts.colocated),
        prefill: ids("p", spec.counts.prefill),
        decode: ids("d", spec.counts.decode),
        attention: spec.moe ? ids("ma", 1) : [],
      },
      ...(spec.moe ? { moe: spec.moe } : {}),
    };
    this.#put(record);
    this.log.info("deployment.created", {
      deploymentId: spec.id,
      model: spec.model,
      mode: spec.mode,
      counts: spec.counts,
    });
    return record;
  }

  #put(d: DeploymentRecord): void {
    this.ctx.storage.sql.exec(
      "INSERT OR REPLACE INTO deployments (id, model, record, created_at) VALUES (?, ?, ?, ?)",
      d.id,
      d.model,
      JSON.stringify(d),
      d.createdAt,
    );
  }

  #stored(name: string): StoredModel | null {
    const row = this.ctx.storage.sql
      .exec("SELECT record FROM models WHERE name = ?", name)
      .toArray()[0];
    return row ? (JSON.parse(row.record as string) as StoredModel) : null;
  }

  #deploymentsOf(model: string): DeploymentRecord[] {
    return this.ctx.storage.sql
      .exec("SELECT record FROM deployments WHERE model = ? ORDER BY created_at, id", model)
      .toArray()
      .map((r) => JSON.parse(r.record as string) as DeploymentRecord)
      .filter((d) => d.status === "active");
  }

  #withDeployments(s: StoredModel): ModelRecord {
    this.#revision = Math.max(this.#revision + 1, Date.now());
    return {
      ...s,
      revision: this.#revision,
      deployments: this.#deploymentsOf(s.name).filter((d) => d.generation === s.generation),
    };
  }
}
