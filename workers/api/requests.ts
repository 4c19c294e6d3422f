/**
 * Asynchronous requests under /api/requests (any key, tenant-scoped): `POST /` submits a batch
 * (DeepFlow's batch-inference job kind: one job per item, run by the JobExecutor in the
 * background) and `DELETE /:id` cancels a request. `GET /:id` lives in app.ts.
 */

import { Hono } from "hono";
import { z } from "zod";
import type { BatchJobSpec } from "../../durable-objects/batch-runner.ts";
import { AppError } from "../../shared/errors.ts";
import type { AppEnv } from "../app-env.ts";
import { jobExecutorFor } from "../env.ts";
import { drawSeed, newJobId } from "../ids.ts";
import { MAX_BATCH_BODY_BYTES, readBody } from "../middleware/body.ts";
import { resolveModel } from "../models.ts";
import { toGenerateFields } from "../openai/generate-fields.ts";
import { parseJsonBody, parseValueAt } from "../openai/parse-body.ts";
import { ChatCompletionSchema, CompletionSchema } from "../openai/schemas.ts";

/** Most items in one batch. */
export const MAX_BATCH_ITEMS = 1000;
/** Largest stored item (its generation fields as JSON), well under a SQLite row's limit. */
const MAX_ITEM_BYTES = 256 * 1024;

const BatchSchema = z.object({
  kind: z.literal("batch"),
  model: z.string(),
  requests: z.array(z.unknown()).min(1).max(MAX_BATCH_ITEMS),
});

const REQUEST_ID_RE = /^req_[0-9a-f]{32}$/;

export const requests = new Hono<AppEnv>();

requests.post("/", async (c) => {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_BATCH_BODY_BYTES));
  const parsed = parseJsonBody(raw, BatchSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const batch = parsed.value;
  const jobs = batch.requests.map((item, i) => itemSpec(item, i, batch.model));
  const model = await resolveModel(c.env, batch.model);
  const { requestId, receivedAt, log, principal } = c.var;
  const clientRequestId = c.req.header("x-request-id")?.slice(0, 200) ?? null;
  log.info("request.received", {
    kind: "batch",
    model: model.name,
    tenant: principal.tenant,
    numJobs: jobs.length,
    clientRequestId,
  });
  await jobExecutorFor(c.env, requestId).submitBatch({
    requestId,
    tenant: principal.tenant,
    model: model.name,
    clientRequestId,
    receivedAt,
    jobs,
  });
  return c.json(
    { id: requestId, object: "request", status: "queued", kind: "batch", num_jobs: jobs.length },
    202,
  );
});

/**
 * One batch item -> its job. A chat body has `messages`, a completion body `prompt`; both are
 * validated by the /v1 schemas, with `param` paths under `requests.<i>`.
 */
function itemSpec(item: unknown, i: number, model: string): BatchJobSpec {
  const at = (field?: string) => `requests.${i}${field ? `.${field}` : ""}`;
  const bad = (message: string, field?: string, code: string | null = null) =>
    new AppError("invalid_request", message, at(field), code);
  if (typeof item !== "object" || item === null || Array.isArray(item)) {
    throw bad(`Invalid type for '${at()}': expected an object.`, undefined, "invalid_type");
  }
  const fields = item as Record<string, unknown>;
  const isChat = "messages" in fields;
  if (isChat === "prompt" in fields) {
    throw bad(
      `Each item needs either 'messages' (a chat completion) or 'prompt' (a completion).`,
      undefined,
      "invalid_value",
    );
  }
  if (fields.model !== undefined && fields.model !== model) {
    throw bad(
      `Every item's 'model' must be the batch's model ('${model}') or omitted.`,
      "model",
      "invalid_value",
    );
  }
  if (fields.stream === true) {
    throw bad("Batch items cannot stream; omit 'stream' or send false.", "stream", "invalid_value");
  }
  if (fields.context_cache != null) {
    const msg = "Batch items cannot continue a context cache.";
    throw bad(msg, "context_cache", "unsupported_parameter");
  }
  if (fields.deployment != null) {
    throw bad("Batch items cannot pin a deployment.", "deployment", "unsupported_parameter");
  }
  // the item as its own /v1 body (the batch's model by default), with errors under requests.<i>
  const root = { requests: { [i]: { ...fields, model } } };
  const prefix = ["requests", i];
  const kind = isChat ? "chat" : "completion";
  const parsed = isChat
    ? parseValueAt(root, prefix, ChatCompletionSchema)
    : parseValueAt(root, prefix, CompletionSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const g = toGenerateFields(parsed.value, kind, drawSeed);
  const spec: BatchJobSpec = {
    jobId: newJobId(),
    kind,
    input: g.input,
    n: g.n,
    maxTokens: g.maxTokens,
    sampling: g.sampling,
    cacheSalt: g.cacheSalt,
    kvCache: g.kvCache,
  };
  if (new TextEncoder().encode(JSON.stringify(spec)).byteLength > MAX_ITEM_BYTES) {
    throw bad(`The item is larger than ${MAX_ITEM_BYTES} bytes.`, undefined, "item_too_large");
  }
  return spec;
}

requests.delete("/:id", async (c) => {
  const id = c.req.param("id");
  if (!REQUEST_ID_RE.test(id))
    throw new AppError("not_found", `No request with id ${id}.`, "id", "request_not_found");
  const res = await jobExecutorFor(c.env, id).cancelRequest({
    requestId: id,
    tenant: c.var.principal.tenant,
  });
  if (!res.ok) throw AppError.from(res.error);
  c.var.log.info("request.cancelled", { cancelledRequestId: id });
  return c.json(res.value);
});
