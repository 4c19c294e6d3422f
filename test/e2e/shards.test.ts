/**
 * End to end with `JOB_EXECUTOR_SHARDS = 4`: a request's records and its scheduling live in the
 * JobExecutor shard hash(id). Requests spread over the shards answer exactly as on a one-shard
 * server (greedy text and usage, streamed and not), and every request's record is found through
 * GET /api/requests/:id from its x-request-id.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";
import { parseSse } from "../helpers/sse.ts";

const NUM_SHARDS = 4;
const MAX_TOKENS = 16;
const BLOCK_SIZE = 16; // KV_BLOCK_SIZE in wrangler.toml

let sharded: DevServer;
let single: DevServer;

beforeAll(async () => {
  [sharded, single] = await Promise.all([
    startDevServer({ JOB_EXECUTOR_SHARDS: String(NUM_SHARDS) }),
    startDevServer(),
  ]);
});

afterAll(async () => {
  await Promise.all([sharded?.stop(), single?.stop()]);
});

type Kind = "chat" | "completion";

interface Prompt {
  kind: Kind;
  body: Record<string, unknown>;
}

/**
 * Six prompts; each is sent streamed and not, so 12 requests go to the sharded server. They are
 * written in the lemma model's vocabulary (one token a character) and each, with its BOS (and a
 * chat's ">"), is shorter than one KV block (16 tokens): two copies running at once share no
 * cached block, so each usage, cached_tokens included, is the one-shard server's.
 */
const PROMPTS: Prompt[] = [
  { kind: "completion", body: { prompt: "a=1;b=2;" } },
  { kind: "completion", body: { prompt: "c=7;d=0;e=5;" } },
  { kind: "completion", body: { prompt: "Q06W2F3G6" } },
  { kind: "completion", body: { prompt: "f=4;g=9;Q05" } },
  { kind: "chat", body: { messages: [{ role: "user", content: "a=3;b=8;" }] } },
  { kind: "chat", body: { messages: [{ role: "user", content: "Q07W3F3G7" }] } },
];

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

interface Answer {
  requestId: string;
  text: string;
  usage: Usage;
}

interface Choice {
  text?: string;
  message?: { content: string };
  delta?: { content?: string };
}

function post(server: DevServer, path: string, body: object): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** One greedy request (default model, a fixed number of tokens), streamed or not. */
async function ask(server: DevServer, p: Prompt, stream: boolean): Promise<Answer> {
  const path = p.kind === "chat" ? "/v1/chat/completions" : "/v1/completions";
  const res = await post(server, path, {
    model: "lemma-moe",
    ...p.body,
    max_tokens: MAX_TOKENS,
    temperature: 0,
    ignore_eos: true,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  });
  const requestId = res.headers.get("x-request-id") ?? "";
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  const piece = (c: Choice) => c.text ?? c.message?.content ?? c.delta?.content ?? "";
  if (!stream) {
    const body = (await res.json()) as { choices: Choice[]; usage: Usage };
    return { requestId, text: body.choices.map(piece).join(""), usage: body.usage };
  }
  const frames = parseSse(await res.text());
  expect(frames.at(-1)).toBe("[DONE]");
  const chunks = frames.slice(0, -1) as { choices: Choice[]; usage: Usage | null }[];
  const usage = chunks.at(-1)?.usage;
  if (!usage) throw new Error("the stream ended without its usage chunk");
  return { requestId, text: chunks.flatMap((c) => c.choices.map(piece)).join(""), usage };
}

interface RequestRecord {
  id: string;
  status: string;
  jobs: { tasks: { role: string; numCompletionTokens: number | null }[] }[];
}

/** The record behind an x-request-id, once finished (it can finish after the response ends). */
async function finishedRecord(server: DevServer, id: string): Promise<RequestRecord> {
  return vi.waitUntil(
    async () => {
      const res = await fetch(`${server.url}/api/requests/${id}`, {
        headers: { authorization: `Bearer ${LOCAL_KEY}` },
      });
      if (res.status !== 200) throw new Error(`GET /api/requests/${id}: ${res.status}`);
      const rec = (await res.json()) as RequestRecord;
      return rec.status !== "queued" && rec.status !== "running" ? rec : false;
    },
    { timeout: 15_000, interval: 50 },
  );
}

/**
 * The JobExecutor shard that logged each request (wrangler dev prints the worker's JSON log
 * lines; every JobExecutor line names its DO, `je/<k>`, and the request it is about).
 */
function shardsOf(output: string, ids: readonly string[]): Map<string, Set<string>> {
  const wanted = new Set(ids);
  const seen = new Map<string, Set<string>>();
  for (const line of output.split("\n")) {
    const at = line.indexOf("{");
    if (at < 0) continue;
    let entry: { do?: unknown; name?: unknown; requestId?: unknown };
    try {
      entry = JSON.parse(line.slice(at)) as typeof entry;
    } catch {
      continue;
    }
    if (entry.do !== "JobExecutor" || typeof entry.requestId !== "string") continue;
    if (!wanted.has(entry.requestId)) continue;
    const names = seen.get(entry.requestId) ?? new Set<string>();
    names.add(String(entry.name));
    seen.set(entry.requestId, names);
  }
  return seen;
}

describe("sharded JobExecutor", () => {
  it("answers like one shard and finds every record by its request id", async () => {
    // the reference: each prompt once, on the one-shard server
    const want = await Promise.all(PROMPTS.map((p) => ask(single, p, false)));
    // all 12 at once on the sharded server, so several shards work at the same time
    const got = await Promise.all(
      PROMPTS.flatMap((p) => [ask(sharded, p, false), ask(sharded, p, true)]),
    );
    expect(got).toHaveLength(12);
    got.forEach((a, i) => {
      const ref = want[Math.floor(i / 2)] as Answer;
      const label = `prompt ${Math.floor(i / 2)} ${i % 2 ? "streamed" : "not streamed"}`;
      expect(a.text, label).toBe(ref.text);
      // the premise: no full KV block for two copies running at once to share
      expect(ref.usage.prompt_tokens, label).toBeLessThan(BLOCK_SIZE);
      expect(a.usage, label).toEqual(ref.usage);
      expect(a.usage.completion_tokens, label).toBe(MAX_TOKENS);
      expect(a.requestId, label).toMatch(/^req_[0-9a-f]{32}$/);
    });
    expect(new Set(got.map((a) => a.requestId)).size).toBe(12);

    for (const a of got) {
      const rec = await finishedRecord(sharded, a.requestId);
      expect(rec.id).toBe(a.requestId);
      expect(rec.status).toBe("succeeded");
      expect(rec.jobs[0]?.tasks[0]?.numCompletionTokens).toBe(a.usage.completion_tokens);
    }

    // each request was handled by exactly one of the four shards, and more than one shard
    // served these 12 (random ids: all in one shard has probability 4 * 4^-12)
    const shards = shardsOf(
      sharded.output(),
      got.map((a) => a.requestId),
    );
    for (const a of got) {
      const names = [...(shards.get(a.requestId) ?? [])];
      expect(names, a.requestId).toHaveLength(1);
      expect(names[0]).toMatch(new RegExp(`^je/[0-${NUM_SHARDS - 1}]$`));
    }
    const used = new Set([...shards.values()].flatMap((s) => [...s]));
    expect(used.size).toBeGreaterThan(1);
  });
});

describe("context caches over four JobExecutor shards", () => {
  it("serves a cache kept in one shard to requests owned by the others", async () => {
    const prefix =
      "The fox ran to the river. The bird sang in the tree. The dog slept in the sun all day long.";
    const created = await post(sharded, "/api/context-caches", {
      model: "lemma-moe",
      prompt: prefix,
    });
    expect(created.status).toBe(201);
    const cache = (await created.json()) as { id: string; num_cached_tokens: number };
    expect(cache.num_cached_tokens).toBeGreaterThan(0);
    // eight requests, owned by shards hash(request id): most of them not the cache's shard
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => {
        const res = await post(sharded, "/v1/completions", {
          model: "lemma-moe",
          context_cache: cache.id,
          prompt: " Then",
          max_tokens: 8,
          temperature: 0,
        });
        expect(res.status).toBe(200);
        return (await res.json()) as {
          choices: { text: string }[];
          usage: { prompt_tokens_details: { cached_tokens: number } };
        };
      }),
    );
    const plain = await post(single, "/v1/completions", {
      model: "lemma-moe",
      prompt: `${prefix} Then`,
      max_tokens: 8,
      temperature: 0,
    });
    const want = ((await plain.json()) as { choices: { text: string }[] }).choices[0]?.text;
    for (const a of answers) {
      expect(a.choices[0]?.text).toBe(want);
      // the pinned blocks at least (a later request may also reuse a block an earlier one filled)
      expect(a.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(
        cache.num_cached_tokens,
      );
    }
  });
});
