/**
 * Bearer API keys. `API_KEYS` holds `tenant:key` pairs, `ADMIN_API_KEYS` admin keys, `METRICS_KEY`
 * a key for Prometheus scrapers (GET /metrics only). Keys are compared in constant time (SHA-256
 * of both sides, then timingSafeEqual) and never logged.
 */
import { AppError } from "../../shared/errors.ts";
import type { Env } from "../env.ts";

export interface Principal {
  tenant: string;
  isAdmin: boolean;
}

const encoder = new TextEncoder();

async function digest(s: string): Promise<ArrayBuffer> {
  return crypto.subtle.digest("SHA-256", encoder.encode(s));
}

/** Digests of the configured keys, computed once per isolate (the secrets do not change in it). */
const configuredDigests = new Map<string, Promise<ArrayBuffer>>();

function configuredDigest(key: string): Promise<ArrayBuffer> {
  let d = configuredDigests.get(key);
  if (!d) {
    d = digest(key);
    configuredDigests.set(key, d);
  }
  return d;
}

function parseTenantKeys(s: string | undefined): { tenant: string; key: string }[] {
  return (s ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p.length > 0)
    .map((p) => {
      const i = p.indexOf(":");
      return i > 0 ? { tenant: p.slice(0, i), key: p.slice(i + 1) } : { tenant: "default", key: p };
    })
    .filter((p) => p.key.length > 0);
}

const NO_KEYS_MESSAGE =
  "No API keys are configured on this deployment. Set them with `wrangler secret put API_KEYS` " +
  "(comma-separated tenant:key pairs) and `wrangler secret put ADMIN_API_KEYS`.";

/** Resolves the caller from the Authorization header. @throws AppError 401. */
export async function authenticate(
  env: Env,
  authorization: string | undefined,
): Promise<Principal> {
  const tenants = parseTenantKeys(env.API_KEYS);
  const admins = parseTenantKeys(env.ADMIN_API_KEYS).map((a) => a.key);
  if (tenants.length === 0 && admins.length === 0) {
    throw new AppError("authentication", NO_KEYS_MESSAGE, null, "no_api_keys_configured");
  }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (!m) {
    throw new AppError(
      "authentication",
      "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.",
      null,
      "missing_api_key",
    );
  }
  const presented = await digest(m[1] as string);
  const matches = async (configured: string) =>
    crypto.subtle.timingSafeEqual(presented, await configuredDigest(configured));
  // check every configured key so timing does not reveal which one matched
  let principal: Principal | null = null;
  for (const t of tenants) {
    if ((await matches(t.key)) && !principal) principal = { tenant: t.tenant, isAdmin: false };
  }
  for (const a of admins) {
    if (await matches(a)) principal = { tenant: principal?.tenant ?? "admin", isAdmin: true };
  }
  if (!principal)
    throw new AppError("authentication", "Incorrect API key provided.", null, "invalid_api_key");
  return principal;
}

/**
 * GET /metrics: an admin key, or `METRICS_KEY`. Anything else (no key, a tenant's key) is a 401,
 * so a scraper misconfigured with a tenant key is told its key is wrong. @throws AppError 401.
 */
export async function authenticateMetrics(
  env: Env,
  authorization: string | undefined,
): Promise<void> {
  const metricsKey = env.METRICS_KEY ?? "";
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "");
  if (m && metricsKey.length > 0) {
    const presented = await digest(m[1] as string);
    if (crypto.subtle.timingSafeEqual(presented, await configuredDigest(metricsKey))) return;
  }
  const principal = await authenticate(env, authorization).catch(() => null);
  if (principal?.isAdmin) return;
  throw new AppError(
    "authentication",
    "GET /metrics needs an admin API key (ADMIN_API_KEYS) or the metrics key (METRICS_KEY).",
    null,
    "invalid_api_key",
  );
}
