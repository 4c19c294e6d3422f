/**
 * Idempotency-Key on POSTs: one run per (tenant, key), the first response replayed (JSON and
 * SSE), 409 while the first still streams, 400 for the key with another body, per-tenant keys,
 * errors kept or not as the rules say, and expiry after 24 h through the JobExecutor's storage.
 * Sampled requests (temperature 1, no seed) make a second run visible: its completion id and
 * text would differ.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { IdempotencyKeys } from "../../durable-objects/idempotency-keys.ts";
import type { JobExecutor } from "../../durable-objects/job-executor.ts";
import { IDEMPOTENCY_TTL_MS } from "../../shared/serving/idempotency.ts";
import { readAll } from "../helpers/sse.ts";
import { post } from "./worker-client.ts";

const body = (extra: object = {}) => ({
  model: "lemma-moe",
  messages: [{ role: "user", content: "Tell me a story." }],
  max_tokens: 12,
  temperature: 1,
  ...extra,
});

const withKey = (key: string, b: object, apiKey?: string) =>
  post("/v1/chat/completions", b, apiKey, { "idempotency-key": key });

async function errorOf(res: Response) {
  return ((await res.json()) as { error: { code: string; message: string; param: string } }).error;
}

describe("Idempotency-Key", () => {
  it("replays the first JSON response instead of running again", async () => {
    const first = await withKey("k-json", body());
    expect(first.status).toBe(200);
    const firstId = first.headers.get("x-request-id");
    const firstBody = await first.text();
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    const again = await withKey("k-json", body());
    expect(again.status).toBe(200);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(again.headers.get("x-request-id")).toBe(firstId);
    expect(await again.text()).toBe(firstBody);
    // without the key the same body runs again (a new completion id)
    const fresh = await post("/v1/chat/completions", body());
    const freshId = ((await fresh.json()) as { id: string }).id;
    expect(freshId).not.toBe((JSON.parse(firstBody) as { id: string }).id);
  });

  it("refuses the key with another body (400) and keeps keys per tenant", async () => {
    const first = await withKey("k-body", body());
    expect(first.status).toBe(200);
    const firstId = ((await first.json()) as { id: string }).id;
    const other = await withKey("k-body", body({ max_tokens: 11 }));
    expect(other.status).toBe(400);
    expect(await errorOf(other)).toMatchObject({
      code: "idempotency_key_reused",
      param: "Idempotency-Key",
    });
    // tenant "other" owns its own "k-body": it runs, and learns nothing of tenant test's request
    const theirs = await withKey("k-body", body(), "sk-other");
    expect(theirs.status).toBe(200);
    expect(theirs.headers.get("idempotent-replayed")).toBeNull();
    expect(((await theirs.json()) as { id: string }).id).not.toBe(firstId);
  });

  it("answers 409 while the first stream runs, then replays the whole stream", async () => {
    const b = body({ stream: true, max_tokens: 16 });
    const first = await withKey("k-sse", b);
    expect(first.status).toBe(200);
    const during = await withKey("k-sse", b);
    expect(during.status).toBe(409);
    expect(during.headers.get("retry-after")).toBe("1");
    expect((await errorOf(during)).code).toBe("idempotency_key_in_use");
    const text = await readAll(first.body as ReadableStream<Uint8Array>);
    expect(text.trimEnd().endsWith("data: [DONE]")).toBe(true);
    // the record is stored in the background once the stream ended
    let replay: Response | null = null;
    for (let i = 0; i < 50 && replay?.status !== 200; i++) {
      replay = await withKey("k-sse", b);
      if (replay.status !== 200) await new Promise((r) => setTimeout(r, 20));
    }
    expect(replay?.status).toBe(200);
    expect(replay?.headers.get("content-type")).toMatch(/^text\/event-stream/);
    expect(replay?.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay?.text()).toBe(text);
  });

  it("keeps a 4xx answer and rejects bad keys", async () => {
    const bad = { model: "lemma-moe", messages: "not a list" };
    const first = await withKey("k-400", bad);
    expect(first.status).toBe(400);
    const again = await withKey("k-400", bad);
    expect(again.status).toBe(400);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    const tooLong = await withKey("x".repeat(256), body());
    expect(tooLong.status).toBe(400);
    expect((await errorOf(tooLong)).code).toBe("invalid_idempotency_key");
  });

  it("forgets a key after 24 hours (the JobExecutor's alarm)", async () => {
    const first = await withKey("k-expiry", body());
    const firstId = ((await first.json()) as { id: string }).id;
    const je = env.JOB_EXECUTOR.getByName("je/0");
    const next = await runInDurableObject(je, async (_je: JobExecutor, state) => {
      const alarm = await state.storage.getAlarm();
      expect(alarm).not.toBeNull();
      expect(alarm as number).toBeLessThanOrEqual(Date.now() + IDEMPOTENCY_TTL_MS);
      // what the alarm does a day later
      return new IdempotencyKeys(state.storage.sql).expire(Date.now() + IDEMPOTENCY_TTL_MS + 1);
    });
    expect(next).toBeNull();
    const again = await withKey("k-expiry", body());
    expect(again.headers.get("idempotent-replayed")).toBeNull();
    expect(((await again.json()) as { id: string }).id).not.toBe(firstId);
  });
});
