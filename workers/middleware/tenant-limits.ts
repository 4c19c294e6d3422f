/**
 * Per-tenant limits on every POST (shared/serving/tenant-limits.ts has the rules and the
 * `TENANT_LIMITS` format): the JobExecutor shard that owns the tenant admits the request or
 * answers with when to retry, which becomes a 429 (`tenant_rate_limit_exceeded` or
 * `tenant_concurrency_limit_exceeded`) with Retry-After. The request's slot is freed when its
 * response has been sent: a JSON one at once, a stream when it ends or its client goes away.
 */
import type { Context, Next } from "hono";
import { AppError } from "../../shared/errors.ts";
import { errorFields } from "../../shared/log.ts";
import { tenantShardKey } from "../../shared/serving/tenant-limits.ts";
import type { AppEnv } from "../app-env.ts";
import { jobExecutorFor } from "../env.ts";
import { tapBody } from "./tap-body.ts";

export async function tenantLimits(c: Context<AppEnv>, next: Next): Promise<void> {
  if (c.req.method !== "POST") {
    await next();
    return;
  }
  const tenant = c.var.principal.tenant;
  const je = jobExecutorFor(c.env, tenantShardKey(tenant));
  const a = await je.acquireTenantSlot({ tenant });
  if (!a.ok) {
    const rate = a.reason === "rate";
    throw new AppError(
      "capacity",
      rate
        ? `Rate limit reached for tenant ${tenant}: ${a.limit.requestsPerMinute} requests per minute.`
        : `Too many requests in flight for tenant ${tenant}: at most ${a.limit.maxConcurrent} at once.`,
      null,
      rate ? "tenant_rate_limit_exceeded" : "tenant_concurrency_limit_exceeded",
      Math.max(1, Math.ceil(a.retryAfterMs / 1000)),
    );
  }
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    c.executionCtx.waitUntil(
      je
        .releaseTenantSlot({ tenant, slotId: a.slotId })
        .catch((e: unknown) => c.var.log.warn("tenant_limit.release_failed", errorFields(e))),
    );
  };
  c.req.raw.signal?.addEventListener("abort", release);
  try {
    await next();
  } catch (e) {
    release();
    throw e;
  }
  const res = c.res;
  if (res.body && res.headers.get("content-type")?.startsWith("text/event-stream")) {
    c.res = new Response(tapBody(res.body, release), res);
  } else {
    release();
  }
}
