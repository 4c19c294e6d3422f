/**
 * Explicit context caches (DeepFlow's RTC by id) under /api/context-caches: store a prompt
 * prefix's KV on an instance for a TTL and get an id; requests continue it with the body field
 * `"context_cache": ID`. Caches belong to the tenant that made them.
 */

import { Hono } from "hono";
import { z } from "zod";
import { AppError } from "../../shared/errors.ts";
import type { ContextCacheRecord } from "../../shared/types/records.ts";
import type { AppEnv } from "../app-env.ts";
import { jobExecutorFor } from "../env.ts";
import { newContextCacheId, newJobId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { resolveModel } from "../models.ts";
import { toGenerateFields } from "../openai/generate-fields.ts";
import { parseJsonBody } from "../openai/parse-body.ts";
import { ChatCompletionSchema, CompletionSchema } from "../openai/schemas.ts";

const MAX_TTL_S = 24 * 3600;

const CreateSchema = z.object({
  model: z.string().min(1),
  prompt: CompletionSchema.shape.prompt.optional(),
  messages: ChatCompletionSchema.shape.messages.optional(),
  ttl_seconds: z.number().int().min(1).max(MAX_TTL_S).default(300),
});

function view(r: ContextCacheRecord) {
  return {
    id: r.id,
    object: r.object,
    model: r.model,
    num_tokens: r.numTokens,
    num_cached_tokens: r.numCachedTokens,
    created_at: Math.floor(r.createdAt / 1000),
    expires_at: Math.floor(r.expiresAt / 1000),
    instance_id: r.instanceId,
  };
}

export const contextCaches = new Hono<AppEnv>();

contextCaches.post("/", async (c) => {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed = parseJsonBody(raw, CreateSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const b = parsed.value;
  if ((b.prompt === undefined) === (b.messages === undefined)) {
    throw new AppError("invalid_request", "give exactly one of `prompt` or `messages`", "prompt");
  }
  if (Array.isArray(b.prompt) && b.prompt.length > 0 && typeof b.prompt[0] !== "number") {
    throw new AppError(
      "invalid_request",
      "a context cache holds one prompt (a string or token ids)",
      "prompt",
    );
  }
  const model = await resolveModel(c.env, b.model);
  // the prefix is tokenised (by the JobExecutor) and computed exactly as a request's prompt would be
  const fields = b.messages
    ? toGenerateFields(
        ChatCompletionSchema.parse({ model: b.model, messages: b.messages, max_tokens: 1 }),
        "chat",
        () => 0,
      )
    : toGenerateFields(
        CompletionSchema.parse({ model: b.model, prompt: b.prompt, max_tokens: 1 }),
        "completion",
        () => 0,
      );
  const id = newContextCacheId();
  const { requestId, principal } = c.var;
  const r = await jobExecutorFor(c.env, id).createContextCache({
    id,
    modelRecord: model,
    ttlMs: b.ttl_seconds * 1000,
    spec: {
      requestId,
      jobId: newJobId(),
      tenant: principal.tenant,
      model: model.name,
      input: fields.input,
      n: 1,
      maxTokens: 1,
      sampling: fields.sampling,
      cacheSalt: null,
    },
  });
  if (!r.ok) throw AppError.from(r.error);
  return c.json(view(r.value), 201);
});

contextCaches.get("/:id", async (c) => {
  const id = c.req.param("id");
  const rec = await jobExecutorFor(c.env, id).getContextCache({
    id,
    tenant: c.var.principal.tenant,
  });
  if (!rec)
    throw new AppError("not_found", `No context cache ${id}.`, "id", "context_cache_not_found");
  return c.json(view(rec));
});

contextCaches.delete("/:id", async (c) => {
  const id = c.req.param("id");
  const ok = await jobExecutorFor(c.env, id).deleteContextCache({
    id,
    tenant: c.var.principal.tenant,
  });
  if (!ok)
    throw new AppError("not_found", `No context cache ${id}.`, "id", "context_cache_not_found");
  return c.json({ id, object: "context_cache", deleted: true });
});
