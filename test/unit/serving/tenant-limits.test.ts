import { describe, expect, it } from "vitest";
import { parseServingConfig } from "../../../shared/config.ts";
import {
  parseTenantLimits,
  SLOT_LEASE_MS,
  TenantLimiter,
} from "../../../shared/serving/tenant-limits.ts";

function limiter(s: string): TenantLimiter {
  const r = parseTenantLimits(s);
  if (!r.ok) throw new Error(r.error);
  return new TenantLimiter(r.value);
}

describe("tenant limits", () => {
  it("parses the format, with * for every other tenant", () => {
    const r = parseTenantLimits(" *=100/8 , free=6/1");
    expect(r).toEqual({
      ok: true,
      value: {
        default: { requestsPerMinute: 100, maxConcurrent: 8 },
        byTenant: { free: { requestsPerMinute: 6, maxConcurrent: 1 } },
      },
    });
    expect(parseTenantLimits("free=6").ok).toBe(false);
    expect(parseTenantLimits("free=0/1").ok).toBe(false);
    expect(() => parseServingConfig({ TENANT_LIMITS: "free:6/1" })).toThrow(/TENANT_LIMITS/);
    const defaults = parseServingConfig({}).tenantLimits.default;
    expect(defaults.maxConcurrent).toBeGreaterThanOrEqual(64);
  });

  it("bursts up to a minute's worth, then refills at the rate", () => {
    const l = limiter("*=1000/1000, free=6/100");
    for (let i = 0; i < 6; i++) expect(l.acquire("free", 0).ok).toBe(true);
    const refused = l.acquire("free", 0);
    expect(refused).toMatchObject({ ok: false, reason: "rate", retryAfterMs: 10_000 });
    expect(l.acquire("free", 9_999).ok).toBe(false);
    expect(l.acquire("free", 10_000).ok).toBe(true);
    expect(l.acquire("someone", 0).ok).toBe(true);
  });

  it("counts requests in flight until released, or until their lease runs out", () => {
    const l = limiter("*=1000/2");
    const a = l.acquire("t", 0);
    const b = l.acquire("t", 0);
    expect(l.acquire("t", 0)).toMatchObject({ ok: false, reason: "concurrency" });
    if (!a.ok || !b.ok) throw new Error("admitted");
    l.release("t", a.slotId);
    expect(l.inFlight("t")).toBe(1);
    expect(l.acquire("t", 1).ok).toBe(true);
    expect(l.acquire("t", 2).ok).toBe(false);
    expect(l.acquire("t", SLOT_LEASE_MS + 1).ok).toBe(true);
  });
});
