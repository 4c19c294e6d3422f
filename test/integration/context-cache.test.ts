/**
 * Explicit context caches: a prefix's KV is pinned on an instance under an id; requests that
 * continue it run there, reuse the pinned blocks (cached_tokens) and produce the same text as
 * the full prompt sent without the cache. Caches are tenant-scoped and can be deleted.
 */
import { describe, expect, it } from "vitest";
import { call, post } from "./worker-client.ts";

interface Completion {
  choices: { text: string }[];
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
}

describe("context caches", () => {
  it("pins a prefix and serves requests that continue it", async () => {
    const prefix = "The fox ran to the river and the bird sang in the tree. ".repeat(3);
    const res = await post("/api/context-caches", {
      model: "lemma-moe",
      prompt: prefix,
      ttl_seconds: 120,
    });
    expect(res.status).toBe(201);
    const cache = (await res.json()) as {
      id: string;
      num_tokens: number;
      num_cached_tokens: number;
      expires_at: number;
    };
    expect(cache.id).toMatch(/^ctx_/);
    expect(cache.num_cached_tokens).toBeGreaterThanOrEqual(16);
    expect(cache.num_cached_tokens).toBeLessThanOrEqual(cache.num_tokens);

    const tail = "Then the fox slept.";
    const withCache = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: tail,
      context_cache: cache.id,
      max_tokens: 8,
      temperature: 0,
    });
    expect(withCache.status).toBe(200);
    const a = (await withCache.json()) as Completion;
    const plain = (await (
      await post("/v1/completions", {
        model: "lemma-moe",
        prompt: prefix + tail,
        max_tokens: 8,
        temperature: 0,
      })
    ).json()) as Completion;
    expect(a.choices[0]?.text).toBe(plain.choices[0]?.text);
    expect(a.usage.prompt_tokens).toBe(plain.usage.prompt_tokens);
    expect(a.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(16);

    // tenant-scoped
    expect((await call(`/api/context-caches/${cache.id}`, {}, "sk-other")).status).toBe(404);
    const other = await post(
      "/v1/completions",
      { model: "lemma-moe", prompt: tail, context_cache: cache.id },
      "sk-other",
    );
    expect(other.status).toBe(404);
    // wrong kind
    const chat = await post("/v1/chat/completions", {
      model: "lemma-moe",
      messages: [{ role: "user", content: "hi" }],
      context_cache: cache.id,
    });
    expect(chat.status).toBe(400);

    const got = (await (await call(`/api/context-caches/${cache.id}`)).json()) as { id: string };
    expect(got.id).toBe(cache.id);
    expect((await call(`/api/context-caches/${cache.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await call(`/api/context-caches/${cache.id}`)).status).toBe(404);
    // the pinned blocks are released: every block of every instance is free again
    const inst = (await (await call("/api/models/lemma-moe/instances", {}, "sk-admin")).json()) as {
      data: { numFreeBlocks: number; numBlocks: number }[];
    };
    for (const i of inst.data) if (i.numBlocks > 0) expect(i.numFreeBlocks).toBe(i.numBlocks);
  });

  it("continues chat prefixes and rejects bad specs", async () => {
    const bad = await post("/api/context-caches", { model: "lemma-moe" });
    expect(bad.status).toBe(400);
    const system = {
      role: "system",
      content:
        "You are a small language model. You help with short answers about the fox and the bird.",
    };
    const user = { role: "user", content: "Hello! Who are you?" };
    const res = await post("/api/context-caches", { model: "lemma-moe", messages: [system] });
    expect(res.status).toBe(201);
    const cache = (await res.json()) as { id: string; num_cached_tokens: number };
    expect(cache.num_cached_tokens).toBeGreaterThanOrEqual(16);
    type Chat = {
      choices: { message: { content: string } }[];
      usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
    };
    const ask = { model: "lemma-moe", max_tokens: 12, temperature: 0 };
    const r = await post("/v1/chat/completions", {
      ...ask,
      context_cache: cache.id,
      messages: [user],
    });
    expect(r.status).toBe(200);
    const withCache = (await r.json()) as Chat;
    // the cached system message goes before the request's messages: the same conversation
    // sent whole gives the same reply, and the pinned blocks are reused
    const whole = (await (
      await post("/v1/chat/completions", { ...ask, messages: [system, user] })
    ).json()) as Chat;
    expect(withCache.choices[0]?.message.content).toBe(whole.choices[0]?.message.content);
    expect(withCache.usage.prompt_tokens).toBe(whole.usage.prompt_tokens);
    expect(withCache.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(
      cache.num_cached_tokens,
    );
  });
});
