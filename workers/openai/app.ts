/**
 * OpenAI-compatible routes under /v1. A completion request becomes a Request -> Job -> Task: the
 * JobExecutor records it and places the task on an instance; the instance's Npu streams events
 * that are sent on as SSE chunks or collected into one response.
 */
import { type Context, Hono } from "hono";
import { AppError } from "../../shared/errors.ts";
import { errorFields } from "../../shared/log.ts";
import { decodeEventBatches, decodeEvents } from "../../shared/protocol/codec.ts";
import type { GenerateInput, JobSpec } from "../../shared/protocol/messages.ts";
import { dispatchJob } from "../../shared/serving/dispatch.ts";
import type { DeploymentRecord, ModelRecord } from "../../shared/types/deployments.ts";
import type { ContextCacheRecord } from "../../shared/types/records.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, type Env, jobExecutorFor, npu } from "../env.ts";
import { drawSeed, newCompletionId, newJobId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { resolveModel } from "../models.ts";
import { collectResponse, SSE_HEADERS, sseResponseStream } from "./format.ts";
import {
  ChatCompletionSchema,
  CompletionSchema,
  parseJsonBody,
  toGenerateFields,
} from "./schemas.ts";

export const openai = new Hono<AppEnv>();

/**
 * Continues a context cache: its prefix goes in front of the request's input (messages before the
 * request's messages; a prompt before each prompt) and the request runs on the instance that
 * pins the prefix's KV. A cache follows its model: one made with weights the model no longer
 * serves (re-uploaded) or on a deployment that was deleted is gone (404). A `deployment` pin must
 * name the cache's deployment (400 otherwise).
 * @throws AppError 404 unknown, expired or invalidated; 400 another model, kind or deployment.
 */
async function useContextCache(
  env: Env,
  tenant: string,
  id: string,
  model: ModelRecord,
  pin: string | undefined,
  input: GenerateInput,
): Promise<ContextCacheRecord> {
  const rec = await jobExecutorFor(env, id).getContextCache({ id, tenant });
  const gone = (why: string) =>
    new AppError(
      "not_found",
      `No context cache ${id} (${why}).`,
      "context_cache",
      "context_cache_not_found",
    );
  if (!rec) throw gone("unknown or expired");
  if (rec.model !== model.name) {
    throw new AppError(
      "invalid_request",
      `Context cache ${id} is for model ${rec.model}.`,
      "context_cache",
    );
  }
  if (rec.generation !== model.generation) {
    throw gone(`model ${model.name} was re-uploaded after it was made; create it again`);
  }
  if (!model.deployments.some((d) => d.id === rec.deploymentId)) {
    throw gone(`its deployment ${rec.deploymentId} was deleted; create it again`);
  }
  if (pin !== undefined && pin !== rec.deploymentId) {
    throw new AppError(
      "invalid_request",
      `Context cache ${id} lives on deployment ${rec.deploymentId}; pin that deployment or none.`,
      "deployment",
    );
  }
  const cached = rec.input;
  if (cached.kind === "chat" && input.kind === "chat") {
    input.messages = [...cached.messages, ...input.messages];
  } else if (cached.kind === "completion" && input.kind === "completion") {
    const prefix = cached.prompts[0] ?? "";
    input.prompts = input.prompts.map((p) => {
      if (typeof prefix === "string" && typeof p === "string") return prefix + p;
      if (typeof prefix !== "string" && typeof p !== "string") return [...prefix, ...p];
      throw new AppError(
        "invalid_request",
        "the prompt and the context cache must both be text or both be token ids",
        "prompt",
      );
    });
  } else {
    throw new AppError(
      "invalid_request",
      `Context cache ${id} holds a ${cached.kind} prefix; use it with that endpoint.`,
      "context_cache",
    );
  }
  return rec;
}

/**
 * The deployments a request may run on: the one it pins with `"deployment"` (404 unknown, 400
 * another model's or a PD group for several sequences), else every active one of its model.
 */
async function pinnedDeployments(
  env: Env,
  model: ModelRecord,
  pin: string | undefined,
  numSeqs: number,
): Promise<DeploymentRecord[]> {
  if (pin === undefined) return model.deployments;
  const d = model.deployments.find((x) => x.id === pin);
  if (!d) {
    const other = await clusterManager(env).getDeployment({ id: pin });
    if (other?.status === "active" && other.model !== model.name) {
      throw new AppError(
        "invalid_request",
        `Deployment ${pin} serves model ${other.model}, not ${model.name}.`,
        "deployment",
      );
    }
    throw new AppError(
      "not_found",
      `No active deployment ${pin} of model ${model.name}.`,
      "deployment",
      "deployment_not_found",
    );
  }
  if (d.mode === "pd" && numSeqs > 1) {
    throw new AppError(
      "invalid_request",
      "A PD deployment serves one prompt with n = 1.",
      "deployment",
    );
  }
  return [d];
}

/** Copies `from` into `to`; when a write fails (the client is gone) calls `onGone` once. */
async function pump(
  from: ReadableStream<Uint8Array>,
  to: WritableStream<Uint8Array>,
  onGone: () => Promise<unknown>,
): Promise<void> {
  const reader = from.getReader();
  const writer = to.getWriter();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    try {
      await writer.write(value);
    } catch {
      await Promise.all([onGone(), reader.cancel().catch(() => {})]);
      return;
    }
  }
  await writer.close().catch(() => {});
}

function modelObject(m: { name: string; createdAt: number; ownedBy: string }) {
  return {
    id: m.name,
    object: "model",
    created: Math.floor(m.createdAt / 1000),
    owned_by: m.ownedBy,
  };
}

openai.get("/models", async (c) => {
  const models = await clusterManager(c.env).listModels();
  return c.json({ object: "list", data: models.map(modelObject) });
});

openai.get("/models/:name", async (c) =>
  c.json(modelObject(await resolveModel(c.env, c.req.param("name")))),
);

openai.post("/chat/completions", (c) => generate(c, "chat"));
openai.post("/completions", (c) => generate(c, "completion"));

async function generate(c: Context<AppEnv>, kind: "chat" | "completion"): Promise<Response> {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed =
    kind === "chat"
      ? parseJsonBody(raw, ChatCompletionSchema)
      : parseJsonBody(raw, CompletionSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const body = parsed.value;
  const fields = toGenerateFields(body, kind, drawSeed);
  const model = await resolveModel(c.env, body.model);
  const { requestId, receivedAt, log, principal } = c.var;
  const pin = body.deployment ?? undefined;
  if (body.context_cache && fields.cacheSalt !== null) {
    throw new AppError(
      "invalid_request",
      "cache_salt cannot be combined with context_cache: a context cache's prefix is shared by its id.",
      "cache_salt",
    );
  }
  const cache = body.context_cache
    ? await useContextCache(c.env, principal.tenant, body.context_cache, model, pin, fields.input)
    : null;
  const numPrompts = fields.input.kind === "completion" ? fields.input.prompts.length : 1;
  const numSeqs = numPrompts * fields.n;
  const deployments = await pinnedDeployments(c.env, model, pin, numSeqs);
  const clientRequestId = c.req.header("x-request-id")?.slice(0, 200) ?? null;
  log.info("request.received", {
    kind,
    model: model.name,
    tenant: principal.tenant,
    stream: fields.stream,
    n: fields.n,
    clientRequestId,
  });
  const spec: JobSpec = {
    requestId,
    jobId: newJobId(),
    tenant: principal.tenant,
    model: model.name,
    input: fields.input,
    n: fields.n,
    maxTokens: fields.maxTokens,
    sampling: fields.sampling,
    cacheSalt: fields.cacheSalt,
  };
  const je = jobExecutorFor(c.env, requestId);
  const submitted = await je.submit({
    spec,
    kind: kind === "chat" ? "chat.completion" : "text_completion",
    clientRequestId,
    receivedAt,
    modelRecord: model,
    deployments,
    pinned: cache ? { deploymentId: cache.deploymentId, instanceId: cache.instanceId } : null,
  });
  if (!submitted.ok) throw AppError.from(submitted.error);
  const { placement, task } = submitted.value;
  const waitUntil = (p: Promise<unknown>) => c.executionCtx.waitUntil(p);
  const res = await dispatchJob(
    (name: string) => c.env.NPU.getByName(name),
    placement,
    task,
    model.r2Key,
    (taskId, error) =>
      waitUntil(
        je.taskEvent({
          requestId,
          taskId,
          status: "failed",
          finishedAt: Date.now(),
          error: error.message,
        }),
      ),
  );
  if (!res.ok) throw AppError.from(res.error);
  const { taskId, instanceId, accepted } = res.value;
  const meta = {
    id: newCompletionId(kind === "chat"),
    created: Math.floor(receivedAt / 1000),
    model: model.name,
    kind,
    numChoices: numSeqs,
    logprobs: fields.sampling.logprobs,
  };
  const reader = accepted.stream.getReader();
  if (fields.stream) {
    const sse = sseResponseStream(
      decodeEventBatches(reader),
      { ...meta, includeUsage: fields.includeUsage },
      (reason) => log.debug("request.streamed", { taskId, reason }),
    );
    const instance = npu(c.env, instanceId);
    const cancel = (reason: string) =>
      instance
        .cancel({ taskId, reason })
        .catch((e: unknown) => log.warn("task.cancel_failed", { taskId, ...errorFields(e) }));
    // NOTE: workerd does not call cancel() on a JS stream returned as a body when the client
    // goes away, nor forward a cancel across DO RPC streams. So the worker pumps the frames
    // itself: a failed write (or the request's abort signal) means the client is gone, and the
    // task is cancelled by an explicit RPC, which frees its KV blocks on the Npu.
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    c.req.raw.signal?.addEventListener("abort", () =>
      c.executionCtx.waitUntil(cancel("client disconnected")),
    );
    c.executionCtx.waitUntil(pump(sse, writable, () => cancel("client disconnected")));
    return new Response(readable, { headers: { ...SSE_HEADERS, "x-request-id": requestId } });
  }
  const out = await collectResponse(decodeEvents(reader), meta);
  if (!out.ok) throw AppError.from(out.error);
  return c.json(out.body);
}
