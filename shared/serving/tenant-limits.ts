/**
 * Per-tenant request limits: a request rate (a token bucket that holds one minute's worth, so a
 * tenant may burst up to its per-minute rate and then goes at that rate) and a number of
 * requests in flight. Configured by the `TENANT_LIMITS` var:
 *
 *   TENANT_LIMITS = "*=60000/256, free=60/4"
 *
 * comma-separated `<tenant>=<requests per minute>/<concurrent requests>`; `*` is every tenant
 * not named (default `*=60000/256`). Pure: the JobExecutor that owns a tenant keeps its
 * TenantLimiter in memory (a restart forgets the counts, which only makes it briefly lenient).
 */

export interface TenantLimit {
  requestsPerMinute: number;
  maxConcurrent: number;
}

export interface TenantLimits {
  default: TenantLimit;
  byTenant: Record<string, TenantLimit>;
}

export const DEFAULT_TENANT_LIMITS = "*=60000/256";
/** An admitted request that was never released (its worker died) frees its slot after this. */
export const SLOT_LEASE_MS = 15 * 60 * 1000;
/** Retry-After for a tenant at its concurrency limit. */
const CONCURRENCY_RETRY_MS = 1000;

const ENTRY = /^([A-Za-z0-9._@-]{1,64}|\*)=(\d{1,9})\/(\d{1,6})$/;

/** The limits in `s`, or an error message naming the bad entry. */
export function parseTenantLimits(
  s: string,
): { ok: true; value: TenantLimits } | { ok: false; error: string } {
  const limits: TenantLimits = {
    default: { requestsPerMinute: 60_000, maxConcurrent: 256 },
    byTenant: {},
  };
  for (const raw of s.split(",")) {
    const entry = raw.trim();
    if (entry.length === 0) continue;
    const m = ENTRY.exec(entry);
    if (!m) {
      return {
        ok: false,
        error: `bad entry "${entry}": expected <tenant>=<requests per minute>/<concurrent requests>`,
      };
    }
    const limit = { requestsPerMinute: Number(m[2]), maxConcurrent: Number(m[3]) };
    if (limit.requestsPerMinute < 1 || limit.maxConcurrent < 1) {
      return { ok: false, error: `bad entry "${entry}": limits must be at least 1` };
    }
    if (m[1] === "*") limits.default = limit;
    else limits.byTenant[m[1] as string] = limit;
  }
  return { ok: true, value: limits };
}

export type Admission =
  | { ok: true; slotId: number }
  | { ok: false; reason: "rate" | "concurrency"; retryAfterMs: number; limit: TenantLimit };

interface TenantState {
  tokens: number;
  refilledAt: number;
  /** slot id -> when it was taken */
  slots: Map<number, number>;
}

export class TenantLimiter {
  readonly #tenants = new Map<string, TenantState>();
  #nextSlot = 1;

  constructor(private readonly limits: TenantLimits) {}

  limitOf(tenant: string): TenantLimit {
    return this.limits.byTenant[tenant] ?? this.limits.default;
  }

  /** Admits a request of `tenant` at `now` (takes a token and a slot) or says when to retry. */
  acquire(tenant: string, now: number): Admission {
    const limit = this.limitOf(tenant);
    const s = this.#state(tenant, limit, now);
    for (const [id, at] of s.slots) if (now - at >= SLOT_LEASE_MS) s.slots.delete(id);
    if (s.slots.size >= limit.maxConcurrent) {
      return { ok: false, reason: "concurrency", retryAfterMs: CONCURRENCY_RETRY_MS, limit };
    }
    if (s.tokens < 1) {
      const msPerToken = 60_000 / limit.requestsPerMinute;
      return {
        ok: false,
        reason: "rate",
        retryAfterMs: Math.ceil((1 - s.tokens) * msPerToken),
        limit,
      };
    }
    s.tokens -= 1;
    const slotId = this.#nextSlot++;
    s.slots.set(slotId, now);
    return { ok: true, slotId };
  }

  /** Frees an admitted request's slot (its response ended). */
  release(tenant: string, slotId: number): void {
    this.#tenants.get(tenant)?.slots.delete(slotId);
  }

  /** Requests of `tenant` in flight. */
  inFlight(tenant: string): number {
    return this.#tenants.get(tenant)?.slots.size ?? 0;
  }

  #state(tenant: string, limit: TenantLimit, now: number): TenantState {
    let s = this.#tenants.get(tenant);
    if (!s) {
      s = { tokens: limit.requestsPerMinute, refilledAt: now, slots: new Map() };
      this.#tenants.set(tenant, s);
    }
    const refill = ((now - s.refilledAt) * limit.requestsPerMinute) / 60_000;
    s.tokens = Math.min(limit.requestsPerMinute, s.tokens + refill);
    s.refilledAt = now;
    return s;
  }
}

/** The JobExecutor shard key of a tenant's limiter (one shard counts all of a tenant's requests). */
export function tenantShardKey(tenant: string): string {
  return `tenant\u0000${tenant}`;
}
