/**
 * OpenAI-compatible routes under /v1. A completion request becomes a Request -> Job -> Task: the
 * JobExecutor records it and places the task on an instance; the instance's Npu streams events
 * that are sent on as SSE chunks or collected into one response.
 */

import { type Context, Hono } from "hono";
import { AppError, type Result } from "../../shared/errors.ts";
import { errorFields } from "../../shared/log.ts";
import { decodeEventBatches } from "../../shared/protocol/codec.ts";
import {
  type JobSpec,
  type ResumeJob,
  type Submitted,
  streamingTask,
} from "../../shared/protocol/messages.ts";
import { numSeqsOf } from "../../shared/serving/admission.ts";
import { dispatchJob } from "../../shared/serving/dispatch.ts";
import { isInstanceFailure, migratingEvents } from "../../shared/serving/migration.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, jobExecutorFor, npu } from "../env.ts";
import { drawSeed, newCompletionId, newJobId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { resolveModel } from "../models.ts";
import { collectResponse, SSE_HEADERS, sseResponseStream } from "./format.ts";
import { toGenerateFields } from "./generate-fields.ts";
import { parseJsonBody } from "./parse-body.ts";
import { ChatCompletionSchema, CompletionSchema } from "./schemas.ts";

export const openai = new Hono<AppEnv>();

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
  const { requestId, receivedAt, log, principal } = c.var;
  if (body.context_cache && fields.cacheSalt !== null) {
    throw new AppError(
      "invalid_request",
      "cache_salt cannot be combined with context_cache: a context cache's prefix is shared by its id.",
      "cache_salt",
    );
  }
  const clientRequestId = c.req.header("x-request-id")?.slice(0, 200) ?? null;
  log.info("request.received", {
    kind,
    model: body.model,
    tenant: principal.tenant,
    stream: fields.stream,
    n: fields.n,
    clientRequestId,
  });
  const spec: JobSpec = {
    requestId,
    jobId: newJobId(),
    tenant: principal.tenant,
    model: body.model,
    input: fields.input,
    n: fields.n,
    maxTokens: fields.maxTokens,
    sampling: fields.sampling,
    cacheSalt: fields.cacheSalt,
    kvCache: fields.kvCache,
  };
  // the JobExecutor admits (model, deployment pin, context cache), tokenises, places, records
  const je = jobExecutorFor(c.env, requestId);
  const submitted = await je.submit({
    spec,
    kind: kind === "chat" ? "chat.completion" : "text_completion",
    clientRequestId,
    receivedAt,
    deployment: body.deployment ?? null,
    contextCache: body.context_cache ?? null,
  });
  if (!submitted.ok) throw AppError.from(submitted.error);
  const { placement, task } = submitted.value;
  const waitUntil = (p: Promise<unknown>) => c.executionCtx.waitUntil(p);
  const dispatch = (s: typeof submitted.value) =>
    dispatchJob(
      (name: string) => c.env.NPU.getByName(name),
      s.placement,
      s.task,
      s.r2Key,
      (taskId, error) =>
        waitUntil(
          je.taskEvent({
            requestId,
            taskId,
            status: "failed",
            finishedAt: Date.now(),
            error: error.message,
            instanceFailure: isInstanceFailure(error),
          }),
        ),
    );
  const res = await dispatch(submitted.value);
  if (!res.ok) throw AppError.from(res.error);
  // the attempt now answering the client: a failed instance's job continues on another one
  let current = { taskId: res.value.taskId, instanceId: res.value.instanceId };
  let deploymentId = placement.deploymentId;
  // a fresh stub per call, and once more if the JobExecutor was reset under the call (it
  // rebuilds the job's migration from its records)
  const resumeJob = async (q: ResumeJob): Promise<Result<Submitted> | null> => {
    for (let i = 0; ; i++) {
      try {
        return await jobExecutorFor(c.env, requestId).resume(q);
      } catch (e) {
        log.warn("request.resume_failed", { attempt: i, ...errorFields(e) });
        if (i >= 1) return null;
      }
    }
  };
  const numChoices = numSeqsOf(fields.input, fields.n);
  const events = migratingEvents(
    decodeEventBatches(res.value.accepted.stream.getReader()),
    async (choices, error) => {
      for (;;) {
        const next = await resumeJob({
          spec,
          task,
          failedTaskId: current.taskId,
          deploymentId,
          choices,
          error: error.message,
        });
        if (!next?.ok) return null;
        const again = await dispatch(next.value);
        deploymentId = next.value.placement.deploymentId;
        if (again.ok) {
          current = { taskId: again.value.taskId, instanceId: again.value.instanceId };
          log.info("request.migrated", { taskId: current.taskId, numChoices: choices.length });
          return decodeEventBatches(again.value.accepted.stream.getReader());
        }
        if (!isInstanceFailure(again.error)) return null;
        const tasks = next.value.placement;
        current = {
          taskId: streamingTask(tasks).taskId,
          instanceId: current.instanceId,
        };
      }
    },
    { numChoices, numPromptTokens: task.prompts.reduce((a, ids) => a + ids.length, 0) },
  );
  const meta = {
    id: newCompletionId(kind === "chat"),
    created: Math.floor(receivedAt / 1000),
    model: task.model,
    kind,
    numChoices,
    logprobs: fields.sampling.logprobs,
  };
  if (fields.stream) {
    const sse = sseResponseStream(
      events,
      { ...meta, includeUsage: fields.includeUsage },
      (reason) => log.debug("request.streamed", { taskId: current.taskId, reason }),
    );
    const cancel = (reason: string) => {
      const { taskId, instanceId } = current;
      return npu(c.env, instanceId)
        .cancel({ taskId, reason })
        .catch((e: unknown) => log.warn("task.cancel_failed", { taskId, ...errorFields(e) }));
    };
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
  const out = await collectResponse(
    (async function* () {
      for await (const batch of events) yield* batch;
    })(),
    meta,
  );
  if (!out.ok) throw AppError.from(out.error);
  return c.json(out.body);
}
