/**
 * Composition root: the Hono frontend (OpenAI API under /v1, DeepFlow's API under /api) and the
 * Durable Object classes, which wrangler requires on the main module.
 */
import { type Context, Hono, type Next } from "hono";
import { HTTPException } from "hono/http-exception";
import { AppError, errorEnvelope, errorInfo, statusOf } from "../shared/errors.ts";
import { errorFields, Logger } from "../shared/log.ts";
import { api } from "./api/app.ts";
import type { AppEnv } from "./app-env.ts";
import { dashboard } from "./dashboard/page.ts";
import { getConfig } from "./env.ts";
import { newRequestId } from "./ids.ts";
import { metrics } from "./metrics.ts";
import { authenticate } from "./middleware/auth.ts";
import { idempotency } from "./middleware/idempotency.ts";
import { tenantLimits } from "./middleware/tenant-limits.ts";
import { ensureDefaultModel } from "./models.ts";
import { openai } from "./openai/app.ts";

export { ClusterManager } from "../durable-objects/cluster-manager.ts";
export { Expert } from "../durable-objects/expert.ts";
export { JobExecutor } from "../durable-objects/job-executor.ts";
export { Npu } from "../durable-objects/npu.ts";
export { WeightCache } from "../durable-objects/weight-cache.ts";

/** Seconds a client should wait after a 429 or a transient 503 (the Retry-After header). */
const RETRY_AFTER_S = 1;

const app = new Hono<AppEnv>();

app.use("*", async (c, next) => {
  const requestId = newRequestId();
  c.set("requestId", requestId);
  c.set("receivedAt", Date.now());
  c.set("log", new Logger({ requestId }, getConfig(c.env).logLevel));
  await next();
  // a replayed idempotent response names the request that produced it
  if (!c.res.headers.has("x-request-id")) c.header("x-request-id", requestId);
});

app.get("/", (c) =>
  c.json({
    name: "flowserve",
    description: "OpenAI-compatible LLM serving on Cloudflare Workers",
    endpoints: [
      "/v1/models",
      "/v1/chat/completions",
      "/v1/completions",
      "/api/requests/:id",
      "/metrics",
      "/dashboard",
    ],
  }),
);
app.get("/health", (c) => c.json({ status: "ok" }));
app.route("/metrics", metrics);
// the page needs no key; its script sends the admin key with each API call
app.route("/dashboard", dashboard);

// authenticated routes; the embedded default model is registered before the first one runs
const authenticated = async (c: Context<AppEnv>, next: Next) => {
  c.set("principal", await authenticate(c.env, c.req.header("authorization")));
  await ensureDefaultModel(c.env);
  await next();
};
app.use("/v1/*", authenticated);
app.use("/api/*", authenticated);
// every POST counts against its tenant's limits; a refused one never claims an idempotency key
app.use("/v1/*", tenantLimits);
app.use("/api/*", tenantLimits);
app.use("/v1/*", idempotency);
app.use("/api/*", idempotency);

app.route("/v1", openai);
app.route("/api", api);

app.notFound((c) =>
  c.json(
    errorEnvelope(
      errorInfo(
        "not_found",
        `Unknown route ${c.req.method} ${new URL(c.req.url).pathname}`,
        null,
        "unknown_url",
      ),
    ),
    404,
  ),
);

app.onError((err, c) => {
  const requestId = c.get("requestId");
  if (requestId) c.header("x-request-id", requestId);
  if (err instanceof AppError) {
    // capacity that frees itself (a full queue, an instance restarting): tell clients when to retry
    if (
      err.kind === "capacity" ||
      (err.kind === "overloaded" && err.code !== "no_deployment") ||
      err.code === "idempotency_key_in_use"
    ) {
      c.header("retry-after", String(err.retryAfterS ?? RETRY_AFTER_S));
    }
    return c.json(errorEnvelope(err.toInfo()), err.status as 400);
  }
  if (err instanceof HTTPException) {
    const info = errorInfo(
      err.status === 413 ? "payload_too_large" : "invalid_request",
      err.message || "bad request",
    );
    return c.json(errorEnvelope(info), err.status);
  }
  const log = c.get("log") ?? new Logger({ requestId });
  log.error("error.unhandled", errorFields(err, true));
  const info = errorInfo(
    "internal",
    `The server had an error processing request ${requestId}.`,
    null,
    "internal_error",
  );
  return c.json(errorEnvelope(info), statusOf("internal") as 500);
});

export default app;
