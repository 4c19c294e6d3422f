/**
 * The ClusterManager's SQLite registry: the models table (each model's stored record, without
 * its deployments and revision) and the deployments table. A model's record as handed out
 * (withDeployments) joins its current generation's active deployments and a fresh revision.
 */
import type { DeploymentRecord, ModelRecord, StoredModel } from "../shared/types/deployments.ts";

export class ClusterRegistry {
  /** The last record revision handed out (see ModelRecord.revision). */
  #revision = 0;

  constructor(private readonly ctx: DurableObjectState) {
    ctx.storage.sql.exec(`
      CREATE TABLE IF NOT EXISTS models (name TEXT PRIMARY KEY, record TEXT NOT NULL, created_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, model TEXT NOT NULL, record TEXT NOT NULL,
        created_at INTEGER NOT NULL);`);
  }

  get #sql() {
    return this.ctx.storage.sql;
  }

  /** Stores a model's record, created or replaced. */
  putModel(record: StoredModel): void {
    this.#sql.exec(
      "INSERT OR REPLACE INTO models (name, record, created_at) VALUES (?, ?, ?)",
      record.name,
      JSON.stringify(record),
      record.createdAt,
    );
  }

  model(name: string): StoredModel | null {
    const row = this.#sql.exec("SELECT record FROM models WHERE name = ?", name).toArray()[0];
    return row ? (JSON.parse(row.record as string) as StoredModel) : null;
  }

  /** Every model, oldest first. */
  models(): StoredModel[] {
    return this.#sql
      .exec("SELECT record FROM models ORDER BY created_at, name")
      .toArray()
      .map((r) => JSON.parse(r.record as string) as StoredModel);
  }

  deployment(id: string): DeploymentRecord | null {
    const row = this.#sql.exec("SELECT record FROM deployments WHERE id = ?", id).toArray()[0];
    return row ? (JSON.parse(row.record as string) as DeploymentRecord) : null;
  }

  putDeployment(d: DeploymentRecord): void {
    this.#sql.exec(
      "INSERT OR REPLACE INTO deployments (id, model, record, created_at) VALUES (?, ?, ?, ?)",
      d.id,
      d.model,
      JSON.stringify(d),
      d.createdAt,
    );
  }

  /** Every active deployment, oldest first. */
  active(): DeploymentRecord[] {
    return this.#sql
      .exec("SELECT record FROM deployments ORDER BY created_at, id")
      .toArray()
      .map((r) => JSON.parse(r.record as string) as DeploymentRecord)
      .filter((d) => d.status === "active");
  }

  /** The active deployments of a model (any generation), oldest first. */
  deploymentsOf(model: string): DeploymentRecord[] {
    return this.#sql
      .exec("SELECT record FROM deployments WHERE model = ? ORDER BY created_at, id", model)
      .toArray()
      .map((r) => JSON.parse(r.record as string) as DeploymentRecord)
      .filter((d) => d.status === "active");
  }

  /** The model's record as handed out: its current generation's deployments, a new revision. */
  withDeployments(s: StoredModel): ModelRecord {
    this.#revision = Math.max(this.#revision + 1, Date.now());
    return {
      ...s,
      revision: this.#revision,
      deployments: this.deploymentsOf(s.name).filter((d) => d.generation === s.generation),
    };
  }
}
