/**
 * `Idempotency-Key` on POSTs (shared/serving/idempotency.ts has the rules). The first request
 * with a key claims it in the JobExecutor shard that owns the (tenant, key) pair and runs; its
 * response is stored there for 24 h: a JSON response once it is sent, a streamed (SSE) one once
 * it ended with [DONE]. A later request with the same key and body gets the stored response
 * replayed (header `idempotent-replayed: true`, the first request's `x-request-id`), with no
 * second run. While the first request still runs, another with its key gets a 409
 * `idempotency_key_in_use` with Retry-After (a stream is not attached to a second client). The
 * same key with another method, path or body is a 400 `idempotency_key_reused` (as Stripe).
 * Responses that are not kept (5xx, 429, a stream cut short or ended by an error) free the key.
 */
import type { Context, Next } from "hono";
import { AppError } from "../../shared/errors.ts";
import { errorFields } from "../../shared/log.ts";
import {
  idempotencyKeyProblem,
  idempotencyShardKey,
  isReplayable,
} from "../../shared/serving/idempotency.ts";
import type { AppEnv } from "../app-env.ts";
import { jobExecutorFor } from "../env.ts";
import { MAX_BATCH_BODY_BYTES, readBodyOnce } from "./body.ts";
import { tapBody } from "./tap-body.ts";

const SSE_END = "data: [DONE]";

async function fingerprint(method: string, path: string, body: Uint8Array): Promise<string> {
  const head = new TextEncoder().encode(`${method} ${path}\n`);
  const all = new Uint8Array(head.byteLength + body.byteLength);
  all.set(head);
  all.set(body, head.byteLength);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The error code of a JSON error envelope, or null. */
function errorCode(text: string): string | null {
  try {
    const code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
    return typeof code === "string" ? code : null;
  } catch {
    return null;
  }
}

export async function idempotency(c: Context<AppEnv>, next: Next): Promise<Response | undefined> {
  const key = c.req.header("idempotency-key");
  if (c.req.method !== "POST" || key === undefined) {
    await next();
    return;
  }
  const problem = idempotencyKeyProblem(key);
  if (problem)
    throw new AppError("invalid_request", problem, "Idempotency-Key", "invalid_idempotency_key");
  const { requestId, principal, log } = c.var;
  const tenant = principal.tenant;
  const body = await readBodyOnce(c.req.raw, MAX_BATCH_BODY_BYTES);
  const je = jobExecutorFor(c.env, idempotencyShardKey(tenant, key));
  const ref = { tenant, key, requestId };
  const claim = await je.claimIdempotencyKey({
    ...ref,
    fingerprint: await fingerprint(c.req.method, new URL(c.req.url).pathname, body),
  });
  switch (claim.kind) {
    case "replay":
      return new Response(claim.body, {
        status: claim.status,
        headers: {
          "content-type": claim.contentType,
          "idempotent-replayed": "true",
          "x-request-id": claim.requestId,
        },
      });
    case "mismatch":
      throw new AppError(
        "invalid_request",
        `Keys for idempotent requests can only be used with the same method, path and body they were first used with (request ${claim.requestId}).`,
        "Idempotency-Key",
        "idempotency_key_reused",
      );
    case "in_progress":
      throw new AppError(
        "conflict",
        `A request with this Idempotency-Key (${claim.requestId}) is still running; retry after it ends to get its result.`,
        "Idempotency-Key",
        "idempotency_key_in_use",
      );
    case "too_large":
      throw new AppError(
        "conflict",
        `The first response to this Idempotency-Key was too large to keep; GET /api/requests/${claim.requestId} says how it ended.`,
        "Idempotency-Key",
        "idempotency_result_unavailable",
      );
    case "claimed":
      break;
  }
  const release = () =>
    je
      .releaseIdempotencyKey(ref)
      .catch((e: unknown) => log.warn("idempotency.release_failed", errorFields(e)));
  await next();
  const res = c.res;
  const contentType = res.headers.get("content-type") ?? "application/json";
  if (contentType.startsWith("text/event-stream") && res.body && res.status === 200) {
    const decoder = new TextDecoder();
    let text = "";
    const onEnd = (complete: boolean) => {
      text += decoder.decode();
      c.executionCtx.waitUntil(
        complete && text.trimEnd().endsWith(SSE_END)
          ? je
              .completeIdempotencyKey({ ...ref, status: res.status, contentType, body: text })
              .catch((e: unknown) => log.warn("idempotency.store_failed", errorFields(e)))
          : release(),
      );
    };
    const onChunk = (chunk: Uint8Array) => {
      text += decoder.decode(chunk, { stream: true });
    };
    c.res = new Response(tapBody(res.body, onEnd, onChunk), res);
    return;
  }
  const text = await res.clone().text();
  if (!isReplayable(res.status, errorCode(text))) {
    await release();
    return;
  }
  await je.completeIdempotencyKey({ ...ref, status: res.status, contentType, body: text });
}
