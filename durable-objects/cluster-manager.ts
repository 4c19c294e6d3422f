/**
 * ClusterManager: the registry of models (GGUF objects in the R2 model registry) and of the
 * instances that serve each one. One object for the cluster; its SQLite state survives restarts.
 * Deployments, the pre-warmed pool and the autoscaler extend this object in later issues.
 */
import { DurableObject } from "cloudflare:workers";
import { Logger, parseLogLevel } from "../shared/log.ts";
import { instanceId } from "../shared/protocol/names.ts";
import type { Env } from "../workers/env.ts";

export interface ModelSummary {
  architecture: string;
  numParameters: number;
  contextLength: number;
  vocabSize: number;
  numExperts: number;
  numExpertsPerTok: number;
}

export interface ModelRecord {
  name: string;
  r2Key: string;
  sizeBytes: number;
  ownedBy: string;
  createdAt: number;
  summary: ModelSummary;
  /** Bumped on every re-upload, so new weights get new instances. */
  generation: number;
  /** Colocated instances serving the model. */
  instances: string[];
}

export class ClusterManager extends DurableObject<Env> {
  private readonly log: Logger;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger({ do: "ClusterManager" }, parseLogLevel(env.LOG_LEVEL));
    ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, record TEXT NOT NULL, created_at INTEGER NOT NULL)",
    );
  }

  /**
   * Registers (or replaces) a model whose bytes are already in R2, with `numInstances` colocated
   * instances. Replacing a model gives it fresh instance ids so no NPU keeps serving old weights.
   */
  async registerModel(m: {
    name: string;
    r2Key: string;
    sizeBytes: number;
    ownedBy: string;
    summary: ModelSummary;
    numInstances: number;
  }): Promise<ModelRecord> {
    const prev = await this.getModel({ name: m.name });
    const generation = prev ? prev.generation + 1 : 0;
    const now = Date.now();
    const record: ModelRecord = {
      name: m.name,
      r2Key: m.r2Key,
      sizeBytes: m.sizeBytes,
      ownedBy: m.ownedBy,
      createdAt: prev?.createdAt ?? now,
      summary: m.summary,
      generation,
      instances: Array.from({ length: m.numInstances }, (_, i) =>
        instanceId(`${m.name}_g${generation}`, i),
      ),
    };
    this.ctx.storage.sql.exec(
      "INSERT OR REPLACE INTO models (name, record, created_at) VALUES (?, ?, ?)",
      m.name,
      JSON.stringify(record),
      record.createdAt,
    );
    this.log.info("model.registered", {
      model: m.name,
      sizeBytes: m.sizeBytes,
      numInstances: m.numInstances,
    });
    return record;
  }

  async getModel(q: { name: string }): Promise<ModelRecord | null> {
    const row = this.ctx.storage.sql
      .exec("SELECT record FROM models WHERE name = ?", q.name)
      .toArray()[0];
    return row ? (JSON.parse(row.record as string) as ModelRecord) : null;
  }

  async listModels(): Promise<ModelRecord[]> {
    return this.ctx.storage.sql
      .exec("SELECT record FROM models ORDER BY created_at, name")
      .toArray()
      .map((r) => JSON.parse(r.record as string) as ModelRecord);
  }
}
