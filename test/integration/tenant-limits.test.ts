/**
 * Per-tenant limits with lowered values (vitest.config.ts: tenant "rate" may send 2 requests a
 * minute, tenant "conc" one at a time): the request past a limit gets a 429 in the OpenAI
 * envelope with Retry-After, other tenants are not affected, and a finished stream frees its slot.
 */
import { describe, expect, it } from "vitest";
import { readAll } from "../helpers/sse.ts";
import { post } from "./worker-client.ts";

const completion = (key: string, extra: object = {}) =>
  post(
    "/v1/completions",
    { model: "lemma-moe", prompt: "Once upon a time", max_tokens: 4, temperature: 0, ...extra },
    key,
  );

async function expect429(res: Response, code: string): Promise<number> {
  expect(res.status).toBe(429);
  const body = (await res.json()) as { error: { type: string; code: string } };
  expect(body.error).toMatchObject({ type: "rate_limit_error", code });
  const after = Number(res.headers.get("retry-after"));
  expect(after).toBeGreaterThanOrEqual(1);
  return after;
}

describe("per-tenant limits", () => {
  it("refuses the request past the rate with Retry-After, and only for that tenant", async () => {
    expect((await completion("sk-rate")).status).toBe(200);
    expect((await completion("sk-rate")).status).toBe(200);
    const after = await expect429(await completion("sk-rate"), "tenant_rate_limit_exceeded");
    // 2 per minute: the next token comes within 30 s
    expect(after).toBeLessThanOrEqual(30);
    expect((await completion("sk-test")).status).toBe(200);
  });

  it("refuses a second request in flight, and admits one again once the stream ended", async () => {
    const first = await completion("sk-conc", { stream: true, max_tokens: 8 });
    expect(first.status).toBe(200);
    const after = await expect429(await completion("sk-conc"), "tenant_concurrency_limit_exceeded");
    expect(after).toBe(1);
    expect(await readAll(first.body as ReadableStream<Uint8Array>)).toContain("[DONE]");
    // the slot is freed in the background once the stream has been read to its end
    let res = await completion("sk-conc");
    for (let i = 0; i < 50 && res.status === 429; i++) {
      await res.body?.cancel();
      await new Promise((r) => setTimeout(r, 20));
      res = await completion("sk-conc");
    }
    expect(res.status).toBe(200);
    await res.body?.cancel();
  });
});
