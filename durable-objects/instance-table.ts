/**
 * The InstancePool's SQLite tables: `instances` (each instance's InstanceStatus, in creation
 * order by rowid) and `counters` (the sequence numbers new instance ids and pooled Npus take).
 */
import type { InstanceStatus } from "../shared/types/instances.ts";

export class InstanceTable {
  constructor(private readonly ctx: DurableObjectState) {
    ctx.storage.sql.exec(`
      CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, deployment_id TEXT NOT NULL,
        state TEXT NOT NULL, record TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);`);
  }

  get #sql() {
    return this.ctx.storage.sql;
  }

  /** The counter's next value (0 first). */
  next(name: string): number {
    const row = this.#sql
      .exec(
        "INSERT INTO counters (name, value) VALUES (?, 0) ON CONFLICT(name) DO UPDATE SET value = value + 1 RETURNING value",
        name,
      )
      .one();
    return row.value as number;
  }

  /** Every instance of a deployment that has not stopped (or every one when `all`), oldest first. */
  statuses(depId: string, all = false): InstanceStatus[] {
    return this.#sql
      .exec("SELECT record FROM instances WHERE deployment_id = ? ORDER BY rowid", depId)
      .toArray()
      .map((r) => JSON.parse(r.record as string) as InstanceStatus)
      .filter((s) => all || (s.state !== "stopped" && s.state !== "failed"));
  }

  save(s: InstanceStatus): void {
    this.#sql.exec(
      // an upsert keeps the row (and its rowid: the creation order statuses() lists)
      "INSERT INTO instances (id, deployment_id, state, record) VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET deployment_id = excluded.deployment_id, state = excluded.state, record = excluded.record",
      s.id,
      s.deploymentId,
      s.state,
      JSON.stringify(s),
    );
  }

  statusOf(id: string): InstanceStatus | null {
    const row = this.#sql.exec("SELECT record FROM instances WHERE id = ?", id).toArray()[0];
    return row ? (JSON.parse(row.record as string) as InstanceStatus) : null;
  }

  /** Every serving instance, of any deployment. */
  serving(): InstanceStatus[] {
    return this.#sql
      .exec("SELECT record FROM instances WHERE state = 'serving'")
      .toArray()
      .map((r) => JSON.parse(r.record as string) as InstanceStatus);
  }
}
