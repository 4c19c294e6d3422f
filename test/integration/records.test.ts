/**
 * Records through the HTTP API: a finished request's record (status, its one job and task, its
 * timestamps in order, token counts equal to the response's usage, visible to its tenant only),
 * and a context cache's end of life (once its TTL has passed, requests naming it and
 * `GET /api/context-caches/:id` answer 404 and its instance frees the pinned KV blocks, while a
 * live cache of the same prefix still serves the same request).
 */

import { describe, expect, it, vi } from "vitest";
import type { RequestRecord } from "../../shared/types/records.ts";
import { parseSse } from "../helpers/sse.ts";
import { call, post } from "./worker-client.ts";

/** A 404 in OpenAI's envelope, with the given `param` and `code`. */
async function expectNotFound(res: Response, param: string, code: string): Promise<void> {
  expect(res.status).toBe(404);
  const body = (await res.json()) as { error: Record<string, unknown> };
  expect(body.error).toEqual({ message: expect.any(String), type: "not_found_error", param, code });
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

/** The request's record once it has finished (the response can end before the record does). */
async function finishedRecord(id: string): Promise<RequestRecord> {
  let rec: RequestRecord | null = null;
  await vi.waitUntil(
    async () => {
      const res = await call(`/api/requests/${id}`);
      expect(res.status).toBe(200);
      rec = (await res.json()) as RequestRecord;
      return rec.status !== "queued" && rec.status !== "running";
    },
    { timeout: 10_000, interval: 20 },
  );
  return rec as unknown as RequestRecord;
}

/** Checks a request's timestamps: all set, and received <= queued <= started <= first token <= finished. */
function expectOrdered(rec: RequestRecord): void {
  const times = [rec.receivedAt, rec.queuedAt, rec.startedAt, rec.firstTokenAt, rec.finishedAt];
  expect(times).toEqual(times.map(() => expect.any(Number)));
  expect([...(times as number[])].sort((a, b) => a - b)).toEqual(times);
}

describe("request records", () => {
  it("records a chat request's job and task with its usage, for its tenant only", async () => {
    const res = await post(
      "/v1/chat/completions",
      {
        model: "lemma-moe",
        messages: [{ role: "user", content: "Hello! Who are you?" }],
        max_tokens: 8,
        temperature: 0,
      },
      undefined,
      { "x-request-id": "client-trace-7" },
    );
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    const { usage } = (await res.json()) as { usage: Usage };

    const rec = await finishedRecord(id);
    expect(rec).toMatchObject({
      id,
      object: "request",
      tenant: "test",
      model: "lemma-moe",
      status: "succeeded",
      clientRequestId: "client-trace-7",
    });
    expectOrdered(rec);
    expect(rec.jobs).toHaveLength(1);
    const job = rec.jobs[0]!;
    expect(job.status).toBe("succeeded");
    expect(job.tasks).toHaveLength(1);
    const task = job.tasks[0]!;
    expect(task.role).toBe("colocated");
    expect(task.status).toBe("succeeded");
    expect(task.instanceId).toMatch(/^inst_/);
    expect(task.numPromptTokens).toBe(usage.prompt_tokens);
    expect(task.numCompletionTokens).toBe(usage.completion_tokens);
    // the task ran inside the request's lifetime
    expect(task.startedAt).toBeGreaterThanOrEqual(rec.receivedAt);
    expect(task.finishedAt).toBeLessThanOrEqual(rec.finishedAt as number);

    // another tenant cannot see it; an unknown or malformed id is a 404 too
    await expectNotFound(
      await call(`/api/requests/${id}`, {}, "sk-other"),
      "id",
      "request_not_found",
    );
    await expectNotFound(
      await call(`/api/requests/req_${"0".repeat(32)}`),
      "id",
      "request_not_found",
    );
    await expectNotFound(await call("/api/requests/nope"), "id", "request_not_found");
  });

  it("records a streamed completion with the usage of its last chunk", async () => {
    const res = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Once upon a time",
      max_tokens: 6,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const frames = parseSse(await res.text());
    expect(frames.at(-1)).toBe("[DONE]");
    const usage = (frames.at(-2) as { usage: Usage | null }).usage;
    expect(usage?.completion_tokens).toBe(6);

    const rec = await finishedRecord(id);
    expect(rec.status).toBe("succeeded");
    expect(rec.clientRequestId).toBeNull();
    expectOrdered(rec);
    const task = rec.jobs[0]?.tasks[0];
    expect(task?.numPromptTokens).toBe(usage?.prompt_tokens);
    expect(task?.numCompletionTokens).toBe(6);
  });
});

describe("context cache lifetime", () => {
  it("answers 404 once its TTL has passed and releases the pinned blocks", async () => {
    // warm the model first: the TTL counts from the start of the pin, which includes a cold load
    const warm = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 1,
    });
    expect(warm.status).toBe(200);
    await warm.text();

    const prefix = "The fox ran to the river and the bird sang in the tree. ".repeat(3);
    const created = await post("/api/context-caches", {
      model: "lemma-moe",
      prompt: prefix,
      ttl_seconds: 1, // the smallest TTL the API accepts
    });
    expect(created.status).toBe(201);
    const cache = (await created.json()) as {
      id: string;
      num_cached_tokens: number;
      expires_at: number;
      instance_id: string;
    };
    expect(cache.num_cached_tokens).toBeGreaterThan(0);
    const instanceBlocks = async (instanceId: string) => {
      const res = await call("/api/models/lemma-moe/instances", {}, "sk-admin");
      const list = (await res.json()) as {
        data: { id: string; numFreeBlocks: number; numBlocks: number }[];
      };
      const inst = list.data.find((i) => i.id === instanceId);
      return { free: inst?.numFreeBlocks ?? -1, total: inst?.numBlocks ?? 0 };
    };
    // expires_at is in whole seconds (rounded down): the cache is gone by the next second
    await vi.waitUntil(() => Date.now() >= (cache.expires_at + 1) * 1000, {
      timeout: 5_000,
      interval: 50,
    });
    const request = { model: "lemma-moe", prompt: " Then the fox slept.", max_tokens: 4 };
    const late = await post("/v1/completions", { ...request, context_cache: cache.id });
    await expectNotFound(late, "context_cache", "context_cache_not_found");
    await expectNotFound(
      await call(`/api/context-caches/${cache.id}`),
      "id",
      "context_cache_not_found",
    );
    await expectNotFound(
      await call(`/api/context-caches/${cache.id}`, { method: "DELETE" }),
      "id",
      "context_cache_not_found",
    );
    // the instance unpins the prefix at expiry: every block is free again
    await vi.waitUntil(
      async () => {
        const b = await instanceBlocks(cache.instance_id);
        return b.free === b.total;
      },
      { timeout: 5_000, interval: 50 },
    );

    // control: a live cache of the same prefix holds blocks on its instance, and the same
    // request continuing it succeeds and reuses them
    const live = (await (
      await post("/api/context-caches", { model: "lemma-moe", prompt: prefix, ttl_seconds: 60 })
    ).json()) as { id: string; instance_id: string };
    const pinned = await instanceBlocks(live.instance_id);
    expect(pinned.free).toBeLessThan(pinned.total);
    const ok = await post("/v1/completions", { ...request, context_cache: live.id });
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as {
      usage: { prompt_tokens_details: { cached_tokens: number } };
    };
    expect(body.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    expect((await call(`/api/context-caches/${live.id}`, { method: "DELETE" })).status).toBe(200);
  });
});
