/**
 * Explicit context caches: a prefix's KV is pinned on an instance under an id; requests that
 * continue it run there, reuse the pinned blocks (cached_tokens) and produce the same text as
 * the full prompt sent without the cache. Caches are tenant-scoped and can be deleted.
 *
 * The prompts are lemma-chain problems of the default model (test/fixtures/lemma-moe-llama-cpp.json):
 * the cache holds a problem's 16 facts, the request continues with its query, and the reply is
 * the start of llama.cpp's greedy answer.
 */
import { describe, expect, it } from "vitest";
import FIXTURE from "../fixtures/lemma-moe-llama-cpp.json";
import { call, post } from "./worker-client.ts";

/**
 * Case `i` of the fixture split before its query: the 16 facts, then the query "Q..W.F.G."
 * (without the generation prompt ">", which the chat template adds).
 */
function splitProblem(i: number) {
  const c = FIXTURE.cases[i] as { prompt: string; answer: string };
  const q = c.prompt.indexOf("Q");
  return { facts: c.prompt.slice(0, q), query: c.prompt.slice(q, -1), answer: c.answer };
}

interface Completion {
  choices: { text: string }[];
  usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
}

describe("context caches", () => {
  it("pins a prefix and serves requests that continue it", async () => {
    const { facts: prefix, query, answer } = splitProblem(0);
    const tail = `${query}>`;
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
    expect(a.choices[0]?.text).toBe(answer.slice(0, 8));
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
      messages: [{ role: "user", content: tail }],
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
    // the lemma model's chat template renders only user messages: the cached prefix is a first
    // user message (the facts), the request's message the query
    const { facts, query, answer } = splitProblem(1);
    const first = { role: "user", content: facts };
    const user = { role: "user", content: query };
    const res = await post("/api/context-caches", { model: "lemma-moe", messages: [first] });
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
    // the cached message goes before the request's messages: the same conversation sent whole
    // gives the same reply (the problem's answer), and the pinned blocks are reused
    const whole = (await (
      await post("/v1/chat/completions", { ...ask, messages: [first, user] })
    ).json()) as Chat;
    expect(withCache.choices[0]?.message.content).toBe(whole.choices[0]?.message.content);
    expect(withCache.choices[0]?.message.content).toBe(answer.slice(0, 12));
    expect(withCache.usage.prompt_tokens).toBe(whole.usage.prompt_tokens);
    expect(withCache.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(
      cache.num_cached_tokens,
    );
  });
});
