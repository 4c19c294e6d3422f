/**
 * The JobExecutor's idempotency keys in its SQLite storage: one row per (tenant, key) with the
 * first request's fingerprint and id, and its response once it answered. What a stored entry
 * means for a new request is decided in shared/serving/idempotency.ts. Rows expire
 * IDEMPOTENCY_TTL_MS after their first use (the JobExecutor's alarm deletes them).
 */
import {
  type Claim,
  decideClaim,
  IDEMPOTENCY_TTL_MS,
  type IdempotencyEntry,
  type IdempotencyState,
  MAX_REPLAY_BYTES,
} from "../shared/serving/idempotency.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS idempotency_keys (
  tenant TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL, request_id TEXT NOT NULL,
  state TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
  status INTEGER, content_type TEXT, body TEXT, PRIMARY KEY (tenant, key));
CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency_keys(expires_at);`;

export interface KeyRef {
  tenant: string;
  key: string;
  /** The request id that claimed the key: only its own completion or release applies. */
  requestId: string;
}

export class IdempotencyKeys {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(SCHEMA);
  }

  #entry(tenant: string, key: string): IdempotencyEntry | null {
    const r = this.sql
      .exec("SELECT * FROM idempotency_keys WHERE tenant = ? AND key = ?", tenant, key)
      .toArray()[0];
    if (!r) return null;
    return {
      fingerprint: r.fingerprint as string,
      requestId: r.request_id as string,
      state: r.state as IdempotencyState,
      createdAt: r.created_at as number,
      expiresAt: r.expires_at as number,
      status: r.status as number | null,
      contentType: r.content_type as string | null,
      body: r.body as string | null,
    };
  }

  /** Claims the key for `requestId` unless an entry decides otherwise; the expiry when claimed. */
  claim(q: KeyRef & { fingerprint: string; now: number }): { claim: Claim; expiresAt: number } {
    const claim = decideClaim(this.#entry(q.tenant, q.key), q.fingerprint, q.now);
    const expiresAt = q.now + IDEMPOTENCY_TTL_MS;
    if (claim.kind === "claimed") {
      this.sql.exec(
        "INSERT OR REPLACE INTO idempotency_keys (tenant, key, fingerprint, request_id, state, created_at, expires_at) VALUES (?, ?, ?, ?, 'running', ?, ?)",
        q.tenant,
        q.key,
        q.fingerprint,
        q.requestId,
        q.now,
        expiresAt,
      );
    }
    return { claim, expiresAt };
  }

  /** Stores the claiming request's response (or, past MAX_REPLAY_BYTES, only that it ended). */
  complete(q: KeyRef & { status: number; contentType: string; body: string }): void {
    const tooLarge = new TextEncoder().encode(q.body).byteLength > MAX_REPLAY_BYTES;
    this.sql.exec(
      "UPDATE idempotency_keys SET state = ?, status = ?, content_type = ?, body = ? WHERE tenant = ? AND key = ? AND request_id = ? AND state = 'running'",
      tooLarge ? "too_large" : "done",
      q.status,
      q.contentType,
      tooLarge ? null : q.body,
      q.tenant,
      q.key,
      q.requestId,
    );
  }

  /** Frees a key whose request did not get a replayable answer (a 5xx, a 429, a disconnect). */
  release(q: KeyRef): void {
    this.sql.exec(
      "DELETE FROM idempotency_keys WHERE tenant = ? AND key = ? AND request_id = ? AND state = 'running'",
      q.tenant,
      q.key,
      q.requestId,
    );
  }

  /** Deletes expired keys; the next expiry, or null when none is left. */
  expire(now: number): number | null {
    this.sql.exec("DELETE FROM idempotency_keys WHERE expires_at <= ?", now);
    const r = this.sql.exec("SELECT MIN(expires_at) AS at FROM idempotency_keys").one();
    return (r.at as number | null) ?? null;
  }
}
