/**
 * The worker's routes inside workerd: OpenAI shapes, error envelopes, SSE framing, auth.
 * Request records are in records.test.ts.
 */
import { env, exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { Tokenizer } from "../../shared/tokenizer/tokenizer.ts";
import { parseSse, readAll } from "../helpers/sse.ts";

const KEY = "Bearer sk-test";
const ADMIN = "Bearer sk-admin";

function call(
  path: string,
  init: RequestInit & { auth?: string | null; body?: BodyInit | null } = {},
) {
  const headers = new Headers(init.headers);
  if (init.auth !== null) headers.set("authorization", init.auth ?? KEY);
  if (typeof init.body === "string") headers.set("content-type", "application/json");
  return exports.default.fetch(new Request(`http://localhost${path}`, { ...init, headers }));
}

const chat = (body: object, auth?: string) =>
  call("/v1/chat/completions", {
    method: "POST",
    body: JSON.stringify({ model: "lemma-moe", ...body }),
    auth,
  });

async function expectEnvelope(
  res: Response,
  status: number,
  type: string,
  extra: Record<string, unknown> = {},
) {
  expect(res.status).toBe(status);
  const body = (await res.json()) as { error: Record<string, unknown> };
  expect(Object.keys(body.error).sort()).toEqual(["code", "message", "param", "type"]);
  expect(body.error.type).toBe(type);
  expect(typeof body.error.message).toBe("string");
  for (const [k, v] of Object.entries(extra)) expect(body.error[k]).toEqual(v);
  expect(JSON.stringify(body)).not.toMatch(/at \w+ \(|\.ts:\d+/); // never a stack trace
  return body.error;
}

describe("OpenAI routes", () => {
  it("lists the default model", async () => {
    const res = await call("/v1/models");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { object: string; data: { id: string; object: string }[] };
    expect(body.object).toBe("list");
    expect(body.data.map((m) => m.id)).toContain("lemma-moe");
    const one = await call("/v1/models/lemma-moe");
    expect(((await one.json()) as { id: string }).id).toBe("lemma-moe");
  });

  it("answers a chat completion with exact usage and a request id", async () => {
    const res = await chat({
      messages: [{ role: "user", content: "Hello! Who are you?" }],
      max_tokens: 12,
      temperature: 0,
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toMatch(/^req_[0-9a-f]{32}$/);
    const body = (await res.json()) as {
      object: string;
      choices: { message: { role: string; content: string }; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
    };
    expect(body.object).toBe("chat.completion");
    expect(body.choices[0]?.message.role).toBe("assistant");
    expect(body.choices[0]?.message.content.length).toBeGreaterThan(0);
    expect(["stop", "length"]).toContain(body.choices[0]?.finish_reason);
    expect(body.usage.total_tokens).toBe(body.usage.prompt_tokens + body.usage.completion_tokens);
    expect(body.usage.completion_tokens).toBeLessThanOrEqual(12);
  });

  it("streams SSE frames ending with [DONE], with the usage chunk when asked", async () => {
    const res = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({
        model: "lemma-moe",
        prompt: "Once upon a time",
        max_tokens: 6,
        stream: true,
        stream_options: { include_usage: true },
        ignore_eos: true,
      }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    // nothing between the worker and the client may cache or buffer the stream
    expect(res.headers.get("cache-control")).toBe("no-cache");
    expect(res.headers.get("x-accel-buffering")).toBe("no");
    const text = await readAll(res.body as ReadableStream<Uint8Array>);
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    const frames = parseSse(text);
    expect(frames.at(-1)).toBe("[DONE]");
    const chunks = frames.slice(0, -1) as {
      object: string;
      choices: { text: string; finish_reason: string | null }[];
      usage: { completion_tokens: number } | null;
    }[];
    expect(chunks.every((c) => c.object === "text_completion")).toBe(true);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.completion_tokens).toBe(6);
    expect(
      chunks.flatMap((c) => c.choices).filter((c) => c.finish_reason === "length"),
    ).toHaveLength(1);
  });

  it("uses the OpenAI error envelope with the right statuses", async () => {
    await expectEnvelope(await chat({ messages: [] }, "Bearer nope"), 401, "authentication_error", {
      code: "invalid_api_key",
    });
    await expectEnvelope(await call("/v1/models", { auth: null }), 401, "authentication_error");
    await expectEnvelope(
      await call("/v1/chat/completions", { method: "POST", body: "{not json" }),
      400,
      "invalid_request_error",
    );
    await expectEnvelope(
      await chat({ messages: [{ role: "user", content: "hi" }], temperature: 7 }),
      400,
      "invalid_request_error",
      { param: "temperature" },
    );
    await expectEnvelope(
      await chat({ model: "nope", messages: [{ role: "user", content: "hi" }] }),
      404,
      "not_found_error",
      { code: "model_not_found" },
    );
    await expectEnvelope(
      await chat({ messages: [{ role: "user", content: "hi" }], max_tokens: 100000 }),
      400,
      "invalid_request_error",
      { code: "context_length_exceeded" },
    );
    await expectEnvelope(await call("/v1/nope"), 404, "not_found_error");
    await expectEnvelope(
      await call("/v1/completions", {
        method: "POST",
        body: JSON.stringify({ model: "lemma-moe", prompt: "x".repeat(5 * 2 ** 20) }),
      }),
      413,
      "invalid_request_error",
    );
  });
});

describe("management and request API", () => {
  it("refuses uploads without an admin key and rejects files that are not GGUF", async () => {
    const put = (auth: string, body: BodyInit) =>
      call("/api/models/tiny", {
        method: "PUT",
        body,
        auth,
        headers: { "content-type": "application/octet-stream" },
      });
    await expectEnvelope(await put(KEY, new Uint8Array([1, 2, 3])), 403, "permission_error");
    await expectEnvelope(
      await put(ADMIN, new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])),
      400,
      "invalid_request_error",
      { code: "invalid_model" },
    );
    const models = (await (await call("/v1/models")).json()) as { data: { id: string }[] };
    expect(models.data.map((m) => m.id)).not.toContain("tiny");
  });

  it.skipIf(!env.REF_STORIES)("serves an uploaded model by name", async () => {
    const up = await call("/api/models/stories", {
      method: "PUT",
      body: env.REF_STORIES as ArrayBuffer,
      auth: ADMIN,
      headers: { "content-type": "application/octet-stream" },
    });
    expect(up.status).toBe(201);
    const res = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({
        model: "stories",
        prompt: "Once upon a time",
        max_tokens: 12,
        temperature: 0,
      }),
    });
    const body = (await res.json()) as {
      choices: { text: string }[];
      usage: { completion_tokens: number };
    };
    // llama.cpp's greedy ids for this prompt, rendered by the (separately llama.cpp-checked) tokenizer
    const cases = (
      JSON.parse(env.REF_GREEDY as string) as {
        cases: { model: string; prompt: string; expected_ids: number[] }[];
      }
    ).cases;
    const ref = cases.find(
      (c) => c.model === "stories260K-f32.gguf" && c.prompt === "Once upon a time",
    );
    const tok = Tokenizer.fromGguf(
      parseGguf(new Uint8Array(env.REF_STORIES as ArrayBuffer)).metadata,
    );
    expect(body.choices[0]?.text).toBe(
      tok.decode(ref?.expected_ids.slice(0, 12) ?? [], { stripLeadingSpace: false }),
    );
    expect(body.usage.completion_tokens).toBe(12);
  });

  it("serves an uploaded Q4_K_M model (Q4_K and Q6_K weights) with llama.cpp's greedy output", async () => {
    const up = await call("/api/models/quant-q4km", {
      method: "PUT",
      body: env.QUANT_Q4_K_M,
      auth: ADMIN,
      headers: { "content-type": "application/octet-stream" },
    });
    expect(up.status).toBe(201);
    const ref = (
      JSON.parse(env.QUANT_LLAMA_CPP as string) as {
        cases: Record<string, { prompt: string; prompt_ids: number[]; steps: { id: number }[] }[]>;
      }
    ).cases.Q4_K_M?.[0];
    if (!ref) throw new Error("test/fixtures/quant/llama-cpp.json lacks a Q4_K_M case");
    const tok = Tokenizer.fromGguf(
      parseGguf(new Uint8Array(env.QUANT_Q4_K_M as ArrayBuffer)).metadata,
    );
    expect(tok.encode(ref.prompt)).toEqual(ref.prompt_ids);
    const res = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({
        model: "quant-q4km",
        prompt: ref.prompt,
        max_tokens: ref.steps.length,
        temperature: 0,
      }),
    });
    const body = (await res.json()) as {
      choices: { text: string }[];
      usage: { completion_tokens: number };
    };
    const ids = ref.steps.map((s) => s.id);
    expect(body.choices[0]?.text).toBe(tok.decode(ids, { stripLeadingSpace: false }));
    expect(body.usage.completion_tokens).toBe(ids.length);
  });
});
