/**
 * The JobExecutor's explicit context caches (DeepFlow's RTC by id), tenant-scoped, in its SQLite
 * storage: the table and every statement on it. A record names the instance whose Npu pins the
 * prefix's KV blocks, and the weights generation it was computed with.
 */
import type { ContextCacheRecord } from "../shared/types/records.ts";

const SCHEMA = `CREATE TABLE IF NOT EXISTS context_caches (id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER NOT NULL);`;

export class ContextCacheStore {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(SCHEMA);
  }

  put(tenant: string, r: ContextCacheRecord): void {
    this.sql.exec(
      "INSERT INTO context_caches (id, tenant, record, expires_at) VALUES (?, ?, ?, ?)",
      r.id,
      tenant,
      JSON.stringify(r),
      r.expiresAt,
    );
  }

  /** The tenant's context cache, or null when unknown, expired (then deleted) or another's. */
  get(id: string, tenant: string, now: number): ContextCacheRecord | null {
    const row = this.sql
      .exec("SELECT record, expires_at FROM context_caches WHERE id = ? AND tenant = ?", id, tenant)
      .toArray()[0];
    if (!row) return null;
    if (Number(row.expires_at) <= now) {
      this.delete(id);
      return null;
    }
    const r = JSON.parse(row.record as string) as ContextCacheRecord;
    return { ...r, generation: r.generation ?? 0 };
  }

  delete(id: string): void {
    this.sql.exec("DELETE FROM context_caches WHERE id = ?", id);
  }
}
