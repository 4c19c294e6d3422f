/**
 * End to end with the official `openai` client against one `wrangler dev`: chat and completions,
 * streaming, n, stop strings, seeds, exact usage, logprobs, the error classes, greedy parity with
 * the engine CLI, and the request records behind `x-request-id`.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import OpenAI, { type APIError } from "openai";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { RequestRecord } from "../../shared/types/records.ts";
import { ADMIN_KEY, type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";
import {
  HAVE_REFERENCE_MODELS,
  REFERENCE_MODELS_DIR,
  REPO_ROOT,
  readReferenceModel,
} from "../helpers/models.ts";

const DEFAULT_MODEL = "lemma-moe";
const STORIES = "stories260k";
const STORIES_FILE = "stories260K-f32.gguf";
const OTHER_KEY = "sk-other";
/** Greedy stories260K continuation of "Once upon a time": ", there was a little girl named Lily." */
const STORIES_PROMPT = "Once upon a time";
const STORY_STOP = " girl";
const HELLO = [{ role: "user" as const, content: "Hello! Who are you?" }];

let server: DevServer;
let client: OpenAI;

beforeAll(async () => {
  server = await startDevServer({ API_KEYS: `local:${LOCAL_KEY},other:${OTHER_KEY}` });
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: LOCAL_KEY, maxRetries: 0 });
  if (HAVE_REFERENCE_MODELS) {
    const res = await fetch(`${server.url}/api/models/${STORIES}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
      body: readReferenceModel(STORIES_FILE) as Uint8Array<ArrayBuffer>,
    });
    if (res.status !== 201) throw new Error(`upload failed: ${res.status} ${await res.text()}`);
  }
});

afterAll(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------------------------------------
// Helpers

interface CliOutput {
  prompt_ids: number[];
  ids: number[];
  text: string;
}

/** The engine CLI's greedy decode (no --model: the embedded default model). */
function runCli(prompt: string, maxTokens: number, modelPath?: string): CliOutput {
  const args = ["run", "-s", "generate", "--"];
  if (modelPath) args.push("--model", modelPath);
  args.push("--prompt", prompt, "--max-tokens", String(maxTokens), "--temperature", "0", "--json");
  const out = execFileSync("npm", args, { cwd: REPO_ROOT, encoding: "utf8", timeout: 60_000 });
  const last = out.trim().split("\n").at(-1) ?? "";
  return JSON.parse(last) as CliOutput;
}

/** Non-empty text without control characters other than newlines and tabs. */
function expectPrintable(text: string): void {
  expect(text.trim().length).toBeGreaterThan(0);
  expect(text).toMatch(/^[\P{Cc}\n\t]+$/u);
}

async function collectChat(
  stream: AsyncIterable<OpenAI.Chat.Completions.ChatCompletionChunk>,
): Promise<{
  text: string[];
  finish: (string | null)[];
  chunks: OpenAI.Chat.Completions.ChatCompletionChunk[];
}> {
  const text: string[] = [];
  const finish: (string | null)[] = [];
  const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? "") + (c.delta.content ?? "");
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, finish, chunks };
}

async function collectCompletion(stream: AsyncIterable<OpenAI.Completions.Completion>): Promise<{
  text: string[];
  pieces: string[];
  finish: (string | null)[];
  chunks: OpenAI.Completions.Completion[];
}> {
  const text: string[] = [];
  const pieces: string[] = [];
  const finish: (string | null)[] = [];
  const chunks: OpenAI.Completions.Completion[] = [];
  for await (const chunk of stream) {
    chunks.push(chunk);
    for (const c of chunk.choices) {
      text[c.index] = (text[c.index] ?? "") + c.text;
      if (c.text) pieces.push(c.text);
      if (c.finish_reason) finish[c.index] = c.finish_reason;
    }
  }
  return { text, pieces, finish, chunks };
}

function getRecord(id: string, key = LOCAL_KEY): Promise<Response> {
  return fetch(`${server.url}/api/requests/${id}`, { headers: { authorization: `Bearer ${key}` } });
}

/** The record once its status is final (progress reports reach the JobExecutor asynchronously). */
async function finalRecord(id: string): Promise<RequestRecord> {
  return vi.waitUntil(
    async () => {
      const res = await getRecord(id);
      if (res.status !== 200) throw new Error(`GET /api/requests/${id}: ${res.status}`);
      const rec = (await res.json()) as RequestRecord;
      const done = rec.status !== "queued" && rec.status !== "running";
      return done && rec.finishedAt !== null && rec.firstTokenAt !== null ? rec : false;
    },
    { timeout: 10_000, interval: 50 },
  );
}

async function expectApiError<E extends APIError>(
  p: Promise<unknown>,
  cls: abstract new (...args: never[]) => E,
  status: number,
): Promise<E> {
  const err = await p.then(
    () => {
      throw new Error("expected the request to fail");
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  const e = err as E;
  expect(e.status).toBe(status);
  // The OpenAI envelope: {error: {message, type, param, code}}.
  const body = e.error as Record<string, unknown>;
  expect(Object.keys(body).sort()).toEqual(["code", "message", "param", "type"]);
  expect(typeof body.message).toBe("string");
  expect(e.requestID).toMatch(/^req_[0-9a-f]{32}$/);
  return e;
}

// ---------------------------------------------------------------------------------------------

describe("openai client: chat and completions on the default model", () => {
  it("lists the served models", async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toContain(DEFAULT_MODEL);
    if (HAVE_REFERENCE_MODELS) expect(ids).toContain(STORIES);
    const one = await client.models.retrieve(DEFAULT_MODEL);
    expect(one.id).toBe(DEFAULT_MODEL);
    expect(one.object).toBe("model");
  });

  it("answers a non-streaming chat completion with printable text", async () => {
    const res = await client.chat.completions.create({
      model: DEFAULT_MODEL,
      messages: HELLO,
      max_tokens: 32,
      temperature: 0,
    });
    expect(res.object).toBe("chat.completion");
    expect(res.id).toMatch(/^chatcmpl-/);
    expect(res.model).toBe(DEFAULT_MODEL);
    expect(res.choices).toHaveLength(1);
    const choice = res.choices[0]!;
    expect(choice.index).toBe(0);
    expect(choice.message.role).toBe("assistant");
    expectPrintable(choice.message.content ?? "");
    expect(["stop", "length"]).toContain(choice.finish_reason);
    expect(res.usage?.total_tokens).toBe(
      (res.usage?.prompt_tokens ?? 0) + (res.usage?.completion_tokens ?? 0),
    );
    expect(res.usage?.completion_tokens).toBeLessThanOrEqual(32);
  });

  it("streams chat deltas that concatenate to the non-streaming greedy text", async () => {
    const params = { model: DEFAULT_MODEL, messages: HELLO, max_tokens: 32, temperature: 0 };
    const full = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true });
    const { text, finish, chunks } = await collectChat(stream);
    expect(chunks.length).toBeGreaterThan(2);
    expect(chunks.every((c) => c.object === "chat.completion.chunk")).toBe(true);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
    expectPrintable(text[0] ?? "");
    expect(text[0]).toBe(full.choices[0]?.message.content);
    expect(finish[0]).toBe(full.choices[0]?.finish_reason);
    const finishChunks = chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason !== null);
    expect(finishChunks).toHaveLength(1);
  });

  it("answers a completion, streaming and not, with the same greedy text", async () => {
    const params = { model: DEFAULT_MODEL, prompt: "Hello", max_tokens: 24, temperature: 0 };
    const res = await client.completions.create(params);
    expect(res.object).toBe("text_completion");
    expect(res.id).toMatch(/^cmpl-/);
    expectPrintable(res.choices[0]?.text ?? "");
    expect(res.usage?.total_tokens).toBe(
      (res.usage?.prompt_tokens ?? 0) + (res.usage?.completion_tokens ?? 0),
    );
    const { text, finish } = await collectCompletion(
      await client.completions.create({ ...params, stream: true }),
    );
    expect(text[0]).toBe(res.choices[0]?.text);
    expect(finish[0]).toBe(res.choices[0]?.finish_reason);
  });

  it("returns n: 2 choices with indices 0 and 1, streaming and not", async () => {
    const chat = await client.chat.completions.create({
      model: DEFAULT_MODEL,
      messages: HELLO,
      max_tokens: 16,
      temperature: 0.8,
      seed: 11,
      n: 2,
    });
    expect(chat.choices.map((c) => c.index)).toEqual([0, 1]);
    for (const c of chat.choices) expectPrintable(c.message.content ?? "");
    const completion = await client.completions.create({
      model: DEFAULT_MODEL,
      prompt: "The",
      max_tokens: 16,
      temperature: 0.8,
      seed: 11,
      n: 2,
    });
    expect(completion.choices.map((c) => c.index)).toEqual([0, 1]);
    const streamed = await collectCompletion(
      await client.completions.create({
        model: DEFAULT_MODEL,
        prompt: "The",
        max_tokens: 16,
        temperature: 0.8,
        seed: 11,
        n: 2,
        stream: true,
      }),
    );
    expect(streamed.text).toHaveLength(2);
    expect(streamed.finish.filter(Boolean)).toHaveLength(2);
    // Same seed: the streamed choices are the non-streamed ones.
    expect(streamed.text).toEqual(completion.choices.map((c) => c.text));
  });

  it("sends usage in a last chunk with stream_options.include_usage", async () => {
    const params = { model: DEFAULT_MODEL, messages: HELLO, max_tokens: 32, temperature: 0 };
    const full = await client.chat.completions.create(params);
    const { text, chunks } = await collectChat(
      await client.chat.completions.create({
        ...params,
        stream: true,
        stream_options: { include_usage: true },
      }),
    );
    expect(text[0]).toBe(full.choices[0]?.message.content);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual(full.usage);
    for (const c of chunks.slice(0, -1)) expect(c.usage).toBeNull();
    // Without include_usage no chunk carries usage.
    const plain = await collectChat(
      await client.chat.completions.create({ ...params, stream: true }),
    );
    expect(plain.chunks.every((c) => c.usage === undefined || c.usage === null)).toBe(true);
  });

  it("returns chat logprobs with top_logprobs alternatives", async () => {
    const res = await client.chat.completions.create({
      model: DEFAULT_MODEL,
      messages: HELLO,
      max_tokens: 16,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    });
    const choice = res.choices[0]!;
    const content = choice.logprobs?.content ?? [];
    expect(content.length).toBeGreaterThan(0);
    expect(content.length).toBeLessThanOrEqual(res.usage?.completion_tokens ?? 0);
    for (const t of content) {
      expect(typeof t.token).toBe("string");
      expect(t.logprob).toBeLessThanOrEqual(0);
      expect(t.bytes).toEqual([...new TextEncoder().encode(t.token)]);
      expect(t.top_logprobs).toHaveLength(2);
      const [a, b] = t.top_logprobs;
      expect(a!.logprob).toBeGreaterThanOrEqual(b!.logprob);
      // Greedy: the chosen token is the most likely one.
      expect(a!.token).toBe(t.token);
      expect(a!.logprob).toBeCloseTo(t.logprob, 6);
    }
    // The tokens spell the reply (the end-of-sequence token, if listed, adds no text).
    const spelled = content.map((t) => t.token).join("");
    expect(spelled.startsWith(choice.message.content ?? "")).toBe(true);
    // Without logprobs: null.
    const plain = await client.chat.completions.create({
      model: DEFAULT_MODEL,
      messages: HELLO,
      max_tokens: 4,
      temperature: 0,
    });
    expect(plain.choices[0]?.logprobs).toBeNull();
  });

  it("matches the engine CLI's greedy output and token counts (default model)", async () => {
    const prompt = "Hello";
    const cli = runCli(prompt, 48);
    const res = await client.completions.create({
      model: DEFAULT_MODEL,
      prompt,
      max_tokens: 48,
      temperature: 0,
    });
    expect(res.choices[0]?.text).toBe(cli.text);
    expect(res.usage?.prompt_tokens).toBe(cli.prompt_ids.length);
    expect(res.usage?.completion_tokens).toBe(cli.ids.length);
    expect(res.usage?.total_tokens).toBe(cli.prompt_ids.length + cli.ids.length);
  });
});

describe("openai client: stories260K", () => {
  it.skipIf(!HAVE_REFERENCE_MODELS)(
    "matches the engine CLI's greedy output and exact usage (stories260K)",
    async () => {
      const cli = runCli(STORIES_PROMPT, 48, join(REFERENCE_MODELS_DIR, STORIES_FILE));
      const res = await client.completions.create({
        model: STORIES,
        prompt: STORIES_PROMPT,
        max_tokens: 48,
        temperature: 0,
      });
      expect(res.choices[0]?.text).toBe(cli.text);
      expect(res.usage?.prompt_tokens).toBe(cli.prompt_ids.length);
      expect(res.usage?.completion_tokens).toBe(cli.ids.length);
      expect(res.usage?.total_tokens).toBe(cli.prompt_ids.length + cli.ids.length);
      // The same counts when streamed with include_usage.
      const { text, chunks } = await collectCompletion(
        await client.completions.create({
          model: STORIES,
          prompt: STORIES_PROMPT,
          max_tokens: 48,
          temperature: 0,
          stream: true,
          stream_options: { include_usage: true },
        }),
      );
      expect(text[0]).toBe(cli.text);
      expect(chunks.at(-1)?.usage).toEqual(res.usage);
    },
  );

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    "ends the text right before a stop string, streaming and not",
    async () => {
      const base = { model: STORIES, prompt: STORIES_PROMPT, max_tokens: 48, temperature: 0 };
      const full = (await client.completions.create(base)).choices[0]?.text ?? "";
      const at = full.indexOf(STORY_STOP);
      expect(at).toBeGreaterThan(0);
      const expected = full.slice(0, at);

      const res = await client.completions.create({ ...base, stop: STORY_STOP });
      expect(res.choices[0]?.text).toBe(expected);
      expect(res.choices[0]?.finish_reason).toBe("stop");

      const listed = await client.completions.create({ ...base, stop: ["zzzq", STORY_STOP] });
      expect(listed.choices[0]?.text).toBe(expected);

      const streamed = await collectCompletion(
        await client.completions.create({ ...base, stop: [STORY_STOP], stream: true }),
      );
      expect(streamed.text[0]).toBe(expected);
      expect(streamed.finish[0]).toBe("stop");
      expect(streamed.text[0]).not.toContain(STORY_STOP);
      for (const p of streamed.pieces) expect(p).not.toContain(STORY_STOP);
    },
  );

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    "stops chat streams on a stop string without sending it",
    async () => {
      const base = {
        model: STORIES,
        messages: [{ role: "user" as const, content: "Tell me a story." }],
        max_tokens: 48,
        temperature: 0,
      };
      const full = (await client.chat.completions.create(base)).choices[0]?.message.content ?? "";
      // A word from the middle of the greedy reply.
      const words = full.split(" ").filter((w) => /^[a-z]{3,}$/.test(w));
      expect(words.length).toBeGreaterThan(0);
      const stop = ` ${words[Math.floor(words.length / 2)]}`;
      expect(full.indexOf(stop)).toBeGreaterThan(0);
      const expected = full.slice(0, full.indexOf(stop));
      const { text, finish } = await collectChat(
        await client.chat.completions.create({ ...base, stop, stream: true }),
      );
      expect(text[0]).toBe(expected);
      expect(text[0]).not.toContain(stop);
      expect(finish[0]).toBe("stop");
    },
  );

  it.skipIf(!HAVE_REFERENCE_MODELS)("reproduces seeded sampling", async () => {
    const base = {
      model: STORIES,
      prompt: STORIES_PROMPT,
      max_tokens: 32,
      temperature: 1,
      ignore_eos: true,
    };
    const a = await client.completions.create({ ...base, seed: 1234 });
    const b = await client.completions.create({ ...base, seed: 1234 });
    const c = await client.completions.create({ ...base, seed: 4321 });
    expect(a.usage?.completion_tokens).toBe(32);
    expect(b.choices[0]?.text).toBe(a.choices[0]?.text);
    expect(c.choices[0]?.text).not.toBe(a.choices[0]?.text);
    // Streaming draws the same tokens for the same seed.
    const streamed = await collectCompletion(
      await client.completions.create({ ...base, seed: 1234, stream: true }),
    );
    expect(streamed.text[0]).toBe(a.choices[0]?.text);
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    "gives n: 2 different choices with temperature > 0 and a seed",
    async () => {
      const params = {
        model: STORIES,
        prompt: STORIES_PROMPT,
        max_tokens: 32,
        temperature: 1,
        seed: 7,
        n: 2,
      };
      const res = await client.completions.create(params);
      expect(res.choices.map((c) => c.index)).toEqual([0, 1]);
      expect(res.choices[0]?.text).not.toBe(res.choices[1]?.text);
      const again = await client.completions.create(params);
      expect(again.choices.map((c) => c.text)).toEqual(res.choices.map((c) => c.text));
    },
  );
});

describe("openai client: errors", () => {
  it("maps an unknown model to NotFoundError (404)", async () => {
    const e = await expectApiError(
      client.chat.completions.create({ model: "no-such-model", messages: HELLO }),
      OpenAI.NotFoundError,
      404,
    );
    expect(e.type).toBe("not_found_error");
    expect(e.code).toBe("model_not_found");
    expect(e.param).toBe("model");
    // Also when streaming: the error comes before the stream starts.
    await expectApiError(
      client.completions.create({ model: "no-such-model", prompt: "x", stream: true }),
      OpenAI.NotFoundError,
      404,
    );
  });

  it("maps a bad parameter to BadRequestError (400) with its param", async () => {
    const e = await expectApiError(
      client.chat.completions.create({ model: DEFAULT_MODEL, messages: HELLO, temperature: 5 }),
      OpenAI.BadRequestError,
      400,
    );
    expect(e.type).toBe("invalid_request_error");
    expect(e.param).toBe("temperature");
  });

  it("rejects a max_tokens beyond the context with context_length_exceeded (400)", async () => {
    const e = await expectApiError(
      client.completions.create({ model: DEFAULT_MODEL, prompt: "Hello", max_tokens: 1_000_000 }),
      OpenAI.BadRequestError,
      400,
    );
    expect(e.code).toBe("context_length_exceeded");
    expect(e.type).toBe("invalid_request_error");
  });

  it("maps a wrong API key to AuthenticationError (401)", async () => {
    const bad = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    const e = await expectApiError(
      bad.chat.completions.create({ model: DEFAULT_MODEL, messages: HELLO }),
      OpenAI.AuthenticationError,
      401,
    );
    expect(e.type).toBe("authentication_error");
  });
});

describe("request records", () => {
  it("records a request under its x-request-id with one colocated task", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: DEFAULT_MODEL, messages: HELLO, max_tokens: 16, temperature: 0 })
      .withResponse();
    const id = response.headers.get("x-request-id") ?? "";
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    const rec = await finalRecord(id);
    expect(rec.id).toBe(id);
    expect(rec.object).toBe("request");
    expect(rec.tenant).toBe("local");
    expect(rec.model).toBe(DEFAULT_MODEL);
    expect(rec.status).toBe("succeeded");
    expect(rec.clientRequestId).toBeNull();
    expect(rec.jobs).toHaveLength(1);
    const job = rec.jobs[0]!;
    expect(job.status).toBe("succeeded");
    expect(job.tasks).toHaveLength(1);
    const task = job.tasks[0]!;
    expect(task.role).toBe("colocated");
    expect(task.status).toBe("succeeded");
    expect(task.instanceId).toMatch(/\S/);
    expect(task.numPromptTokens).toBe(data.usage?.prompt_tokens);
    expect(task.numCompletionTokens).toBe(data.usage?.completion_tokens);
    const times = [rec.receivedAt, rec.queuedAt, rec.startedAt, rec.firstTokenAt, rec.finishedAt];
    for (const t of times) expect(typeof t).toBe("number");
    const ts = times as number[];
    for (let i = 1; i < ts.length; i++) expect(ts[i]).toBeGreaterThanOrEqual(ts[i - 1]!);
  });

  it("records streamed requests too", async () => {
    const { data, response } = await client.chat.completions
      .create({ model: DEFAULT_MODEL, messages: HELLO, max_tokens: 8, stream: true })
      .withResponse();
    const id = response.headers.get("x-request-id") ?? "";
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    await collectChat(data);
    const rec = await finalRecord(id);
    expect(rec.status).toBe("succeeded");
    expect(rec.jobs[0]?.tasks[0]?.role).toBe("colocated");
  });

  it("hides a request from other tenants", async () => {
    const { response } = await client.completions
      .create({ model: DEFAULT_MODEL, prompt: "Hello", max_tokens: 4 })
      .withResponse();
    const id = response.headers.get("x-request-id") ?? "";
    await finalRecord(id);
    const other = await getRecord(id, OTHER_KEY);
    expect(other.status).toBe(404);
    const body = (await other.json()) as { error: { type: string; code: string | null } };
    expect(body.error.type).toBe("not_found_error");
    const unknown = await getRecord(`req_${"0".repeat(32)}`);
    expect(unknown.status).toBe(404);
    const noKey = await fetch(`${server.url}/api/requests/${id}`);
    expect(noKey.status).toBe(401);
  });

  it("keeps a client X-Request-Id as clientRequestId without using it as the id", async () => {
    const clientId = "my-trace-0001";
    const { response } = await client.completions
      .create(
        { model: DEFAULT_MODEL, prompt: "Hello", max_tokens: 4 },
        { headers: { "X-Request-Id": clientId } },
      )
      .withResponse();
    const id = response.headers.get("x-request-id") ?? "";
    expect(id).toMatch(/^req_[0-9a-f]{32}$/);
    expect(id).not.toBe(clientId);
    const rec = await finalRecord(id);
    expect(rec.clientRequestId).toBe(clientId);
    expect((await getRecord(clientId)).status).toBe(404);
  });
});
