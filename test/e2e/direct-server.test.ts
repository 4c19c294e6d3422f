/**
 * The direct server (test/helpers/direct-server.ts: the deploy bundle on Miniflare, without
 * wrangler dev's proxy) that bench:api --server direct measures serves the worker as wrangler dev
 * does: health, the embedded default model, a stream to [DONE], and an uploaded GGUF.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_KEY, type DevServer, LOCAL_KEY } from "../helpers/dev-server.ts";
import { startDirectServer } from "../helpers/direct-server.ts";
import { HAVE_REFERENCE_MODELS, readReferenceModel } from "../helpers/models.ts";
import { parseSse } from "../helpers/sse.ts";

let server: DevServer;
const headers = { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" };
const HELLO = [{ role: "user", content: "Hello! Who are you?" }];

beforeAll(async () => {
  server = await startDirectServer();
});

afterAll(async () => {
  await server?.stop();
});

function post(path: string, body: object): Promise<Response> {
  return fetch(`${server.url}${path}`, { method: "POST", headers, body: JSON.stringify(body) });
}

describe("direct server", () => {
  it("answers /health and chat completions with the default model", async () => {
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });

    const res = await post("/v1/chat/completions", {
      model: "lemma-moe",
      messages: HELLO,
      max_tokens: 16,
      temperature: 0,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as {
      choices: { message: { content: string } }[];
      usage: { completion_tokens: number };
    };
    expect(body.choices[0]?.message.content.length).toBeGreaterThan(0);
    expect(body.usage.completion_tokens).toBeGreaterThan(0);
  });

  it("streams a completion to [DONE] with the same text as the non-streamed one", async () => {
    const req = { model: "lemma-moe", messages: HELLO, max_tokens: 16, temperature: 0 };
    const whole = (await (await post("/v1/chat/completions", req)).json()) as {
      choices: { message: { content: string } }[];
    };
    const res = await post("/v1/chat/completions", { ...req, stream: true });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = parseSse(await res.text());
    expect(events.at(-1)).toBe("[DONE]");
    const text = events
      .filter((e): e is { choices: { delta: { content?: string } }[] } => e !== "[DONE]")
      .map((e) => e.choices[0]?.delta.content ?? "")
      .join("");
    expect(text).toBe(whole.choices[0]?.message.content);
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)("serves an uploaded GGUF", async () => {
    const up = await fetch(`${server.url}/api/models/stories260K`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
      body: readReferenceModel("stories260K-f32.gguf") as Uint8Array<ArrayBuffer>,
    });
    expect(up.status).toBe(201);
    const res = await post("/v1/completions", {
      model: "stories260K",
      prompt: "Once upon a time",
      max_tokens: 12,
      temperature: 0,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { choices: { text: string }[] };
    // The greedy continuation the openai-client e2e test checks against the engine CLI.
    expect(body.choices[0]?.text).toMatch(/^, there was a little girl named Lily\./);
  });
});
