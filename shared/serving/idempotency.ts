/**
 * Idempotency keys (`Idempotency-Key` on POSTs): what a key's stored entry means for a new
 * request that carries it. A key belongs to a tenant; its entry holds a fingerprint of the first
 * request (method, path, body), that request's id, and once it answered, its response. Pure:
 * the JobExecutor stores the entries (durable-objects/idempotency-keys.ts).
 *
 * - no entry (or an expired one): the request claims the key and runs;
 * - same fingerprint, answered: the stored response is replayed (no second run);
 * - same fingerprint, still running: 409 `idempotency_key_in_use` (retry after it ends); a running
 *   entry older than RUNNING_LEASE_MS was cut off (its worker died) and may be claimed again;
 * - another fingerprint: 400 `idempotency_key_reused`, as Stripe answers.
 */

/** How long a key is remembered after its first use. */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000;
/** A key still running after this long was abandoned (its worker went away) and is free again. */
export const RUNNING_LEASE_MS = 10 * 60 * 1000;
/** Longest key (Stripe's limit). */
export const MAX_IDEMPOTENCY_KEY_LENGTH = 255;
/** Largest response kept for replay (a SQLite row holds at most 2 MB). */
export const MAX_REPLAY_BYTES = 1024 * 1024;

export type IdempotencyState = "running" | "done" | "too_large";

export interface IdempotencyEntry {
  fingerprint: string;
  requestId: string;
  state: IdempotencyState;
  createdAt: number;
  expiresAt: number;
  /** The first response, once `done`. */
  status: number | null;
  contentType: string | null;
  body: string | null;
}

export type Claim =
  | { kind: "claimed" }
  | { kind: "replay"; requestId: string; status: number; contentType: string; body: string }
  | { kind: "in_progress"; requestId: string }
  | { kind: "too_large"; requestId: string }
  | { kind: "mismatch"; requestId: string };

/** Why a key is unusable (empty, too long, not printable ASCII), or null. */
export function idempotencyKeyProblem(key: string): string | null {
  if (key.length === 0 || key.length > MAX_IDEMPOTENCY_KEY_LENGTH) {
    return `Idempotency-Key must be 1-${MAX_IDEMPOTENCY_KEY_LENGTH} characters long.`;
  }
  if (!/^[\x20-\x7e]+$/.test(key)) {
    return "Idempotency-Key must be printable ASCII.";
  }
  return null;
}

/** What a request with `fingerprint` gets for a key whose entry is `entry` (null: none). */
export function decideClaim(
  entry: IdempotencyEntry | null,
  fingerprint: string,
  now: number,
): Claim {
  if (entry === null || entry.expiresAt <= now) return { kind: "claimed" };
  const { requestId } = entry;
  if (entry.fingerprint !== fingerprint) return { kind: "mismatch", requestId };
  if (entry.state === "too_large") return { kind: "too_large", requestId };
  if (entry.state === "running") {
    return now - entry.createdAt >= RUNNING_LEASE_MS
      ? { kind: "claimed" }
      : { kind: "in_progress", requestId };
  }
  return {
    kind: "replay",
    requestId,
    status: entry.status ?? 200,
    contentType: entry.contentType ?? "application/json",
    body: entry.body ?? "",
  };
}

/** Whether a response is kept for replay: anything but a 5xx, a 429 or another key conflict. */
export function isReplayable(status: number, code: string | null): boolean {
  if (status >= 500 || status === 429) return false;
  return !(code?.startsWith("idempotency_") ?? false);
}

/** The JobExecutor shard key of a tenant's idempotency key (keys are per tenant). */
export function idempotencyShardKey(tenant: string, key: string): string {
  return `idem\u0000${tenant}\u0000${key}`;
}
