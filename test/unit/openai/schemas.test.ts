/**
 * OpenAI request schemas: what parses (SDK-shaped bodies, nulls, unknown fields), each rejection
 * with its `param`/`code`, and the mapping of every parameter onto GenerateInput/GenerateSampling.
 */

import { describe, expect, it, vi } from "vitest";
import type { ErrorInfo } from "../../../shared/errors.ts";
import { toGenerateFields } from "../../../workers/openai/generate-fields.ts";
import { parseJsonBody } from "../../../workers/openai/parse-body.ts";
import { MAX_CACHE_SALT_LENGTH } from "../../../workers/openai/schema-fields.ts";
import {
  type ChatCompletionBody,
  ChatCompletionSchema,
  type CompletionBody,
  CompletionSchema,
} from "../../../workers/openai/schemas.ts";

const USER = [{ role: "user", content: "Hi" }];

function parseChat(extra: Record<string, unknown>) {
  return parseJsonBody(
    JSON.stringify({ model: "m", messages: USER, ...extra }),
    ChatCompletionSchema,
  );
}

function parseCompletion(extra: Record<string, unknown>) {
  return parseJsonBody(JSON.stringify({ model: "m", prompt: "Hi", ...extra }), CompletionSchema);
}

function chatOk(extra: Record<string, unknown>): ChatCompletionBody {
  const r = parseChat(extra);
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.error)}`);
  return r.value;
}

function completionOk(extra: Record<string, unknown>): CompletionBody {
  const r = parseCompletion(extra);
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.error)}`);
  return r.value;
}

function errorOf(r: { ok: true } | { ok: false; error: ErrorInfo }): ErrorInfo {
  if (r.ok) throw new Error("expected an error");
  return r.error;
}

function chatError(extra: Record<string, unknown>): ErrorInfo {
  return errorOf(parseChat(extra));
}

function completionError(extra: Record<string, unknown>): ErrorInfo {
  return errorOf(parseCompletion(extra));
}

const noSeed = () => {
  throw new Error("drawSeed must not be called");
};

describe("parseJsonBody: JSON and body shape", () => {
  it("rejects malformed JSON with OpenAI's message and no param/code", () => {
    const e = errorOf(parseJsonBody('{"model": "m",', ChatCompletionSchema));
    expect(e.kind).toBe("invalid_request");
    expect(e.message).toMatch(/could not parse the JSON body/);
    expect(e.param).toBeNull();
    expect(e.code).toBeNull();
  });

  it.each(["[1]", "null", '"x"', "3"])("rejects a non-object body %s", (raw) => {
    const e = errorOf(parseJsonBody(raw, ChatCompletionSchema));
    expect(e).toMatchObject({ kind: "invalid_request", param: null });
    expect(e.message).toMatch(/JSON object/);
  });

  it("accepts a minimal chat body and strips unknown fields", () => {
    const v = chatOk({ foo: 1, metadata: { a: "b" }, store: true, repetition_penalty: 1.2 });
    expect(v.model).toBe("m");
    expect(v.messages).toEqual([{ role: "user", content: "Hi" }]);
    expect(v).not.toHaveProperty("foo");
    expect(v).not.toHaveProperty("metadata");
  });

  it("strips unknown fields inside messages, parts and stream_options", () => {
    const v = chatOk({
      messages: [
        { role: "user", content: [{ type: "text", text: "a", cache: 1 }], extra: true },
        { role: "tool", content: "42", tool_call_id: "call_1" },
      ],
      stream: true,
      stream_options: { include_usage: true, include_obfuscation: false },
    });
    expect(v.messages[0]).toEqual({ role: "user", content: [{ type: "text", text: "a" }] });
    expect(v.stream_options).toEqual({ include_usage: true });
  });

  it("accepts every optional field as null (as some clients send)", () => {
    const nulls = Object.fromEntries(
      [
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "n",
        "stream",
        "stream_options",
        "user",
        "ignore_eos",
        "deployment",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "parallel_tool_calls",
      ].map((k) => [k, null]),
    );
    expect(parseChat(nulls).ok).toBe(true);
    const { response_format, tools, tool_choice, functions, function_call, ...rest } = nulls;
    expect(parseCompletion({ ...rest, echo: null, suffix: null, best_of: null }).ok).toBe(true);
  });

  it("accepts an openai-SDK-shaped chat body", () => {
    const v = chatOk({
      messages: [
        { role: "developer", content: "Be brief." },
        { role: "system", content: [{ type: "text", text: "sys" }] },
        { role: "user", content: "Hi", name: "bob" },
        { role: "assistant", content: null, refusal: null },
        { role: "user", content: "again" },
      ],
      max_completion_tokens: 64,
      temperature: 0.7,
      top_p: 0.9,
      seed: 42,
      stop: ["\n\n"],
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
      logprobs: true,
      top_logprobs: 5,
      user: "u-1",
      presence_penalty: 0,
      frequency_penalty: 0,
      logit_bias: {},
      response_format: { type: "text" },
      tools: [],
      tool_choice: "none",
      parallel_tool_calls: false,
    });
    expect(v.messages).toHaveLength(5);
  });
});

describe("parseJsonBody: chat messages", () => {
  it("requires model and messages", () => {
    expect(errorOf(parseJsonBody('{"messages": []}', ChatCompletionSchema))).toMatchObject({
      param: "model",
      code: "missing_required_parameter",
    });
    expect(errorOf(parseJsonBody('{"model": "m"}', ChatCompletionSchema))).toMatchObject({
      param: "messages",
      code: "missing_required_parameter",
    });
  });

  it("rejects an empty messages array", () => {
    expect(chatError({ messages: [] })).toMatchObject({ param: "messages", code: "empty_array" });
  });

  it("rejects a wrong model type with the field in the message", () => {
    const e = chatError({ model: 3 });
    expect(e).toMatchObject({ param: "model", code: "invalid_type" });
    expect(e.message).toContain("'model'");
    expect(e.message).toContain("string");
  });

  it("rejects an unknown role, listing the supported ones", () => {
    const e = chatError({ messages: [{ role: "function", content: "x" }] });
    expect(e).toMatchObject({ param: "messages.0.role", code: "invalid_value" });
    expect(e.message).toContain("'function'");
    expect(e.message).toContain("'developer'");
  });

  it("rejects non-text content parts, naming the part", () => {
    const e = chatError({
      messages: [
        { role: "user", content: "ok" },
        {
          role: "user",
          content: [
            { type: "text", text: "see" },
            { type: "image_url", image_url: { url: "https://x/y.png" } },
          ],
        },
      ],
    });
    expect(e).toMatchObject({ param: "messages.1.content.1.type", code: "unsupported_value" });
    expect(e.message).toMatch(/image_url/);
    expect(e.message).toMatch(/only 'text'/);
  });

  it("rejects a content of the wrong type", () => {
    const e = chatError({ messages: [{ role: "user", content: 5 }] });
    expect(e).toMatchObject({ param: "messages.0.content", code: "invalid_type" });
    expect(e.message).toMatch(/string or an array of text content parts/);
  });

  it("rejects a text part without text", () => {
    const e = chatError({ messages: [{ role: "user", content: [{ type: "text" }] }] });
    expect(e).toMatchObject({ param: "messages.0.content.0.text" });
  });

  it("allows null or absent content only for assistant messages", () => {
    expect(
      chatOk({ messages: [{ role: "assistant", content: null }, ...USER] }).messages,
    ).toHaveLength(2);
    expect(chatOk({ messages: [{ role: "assistant" }, ...USER] }).messages).toHaveLength(2);
    expect(chatError({ messages: [{ role: "user", content: null }] })).toMatchObject({
      param: "messages.0.content",
    });
    expect(chatError({ messages: [{ role: "system" }] })).toMatchObject({
      param: "messages.0.content",
    });
  });

  it("rejects a message that is not an object", () => {
    expect(chatError({ messages: ["hi"] })).toMatchObject({
      param: "messages.0",
      code: "invalid_type",
    });
  });
});

describe("parseJsonBody: numeric ranges and types", () => {
  it.each([
    ["temperature", 2.5],
    ["temperature", -0.1],
    ["top_p", 0],
    ["top_p", 1.01],
    ["top_k", -2],
    ["n", 0],
    ["n", 9],
    ["max_tokens", 0],
    ["max_completion_tokens", 0],
    ["top_logprobs", 21],
    ["presence_penalty", 2.5],
    ["frequency_penalty", -3],
  ])("rejects %s = %s", (param, value) => {
    const e = chatError({ [param]: value, logprobs: true });
    expect(e).toMatchObject({ kind: "invalid_request", param });
    expect(e.message).toContain(`'${param}'`);
    expect(e.message).toContain(String(value));
  });

  it.each([
    ["n", 1.5],
    ["max_tokens", 10.5],
    ["seed", 1.5],
    ["top_k", 2.5],
    ["top_logprobs", 1.5],
  ])("rejects a non-integer %s", (param, value) => {
    const e = chatError({ [param]: value, logprobs: true });
    expect(e).toMatchObject({ param, code: "invalid_type" });
    expect(e.message).toMatch(/integer/);
  });

  it.each([
    ["temperature", "1"],
    ["stream", "yes"],
    ["logprobs", 1],
    ["ignore_eos", "true"],
    ["user", 5],
    ["deployment", 5],
  ])("rejects %s of the wrong type", (param, value) => {
    expect(chatError({ [param]: value })).toMatchObject({ param, code: "invalid_type" });
  });

  it("accepts the range bounds", () => {
    expect(parseChat({ temperature: 0, top_p: 1, n: 8, top_k: -1 }).ok).toBe(true);
    expect(parseChat({ temperature: 2, top_p: 1e-9, n: 1, top_k: 0 }).ok).toBe(true);
    expect(parseChat({ logprobs: true, top_logprobs: 20 }).ok).toBe(true);
    expect(parseChat({ seed: -5, max_tokens: 1 }).ok).toBe(true);
  });

  it("validates stream_options", () => {
    expect(chatError({ stream: true, stream_options: { include_usage: "y" } })).toMatchObject({
      param: "stream_options.include_usage",
      code: "invalid_type",
    });
    expect(chatError({ stream: true, stream_options: "y" })).toMatchObject({
      param: "stream_options",
    });
  });

  it("validates stop", () => {
    expect(parseChat({ stop: "x" }).ok).toBe(true);
    expect(parseChat({ stop: ["a", "b", "c", "d"] }).ok).toBe(true);
    const tooMany = chatError({ stop: ["a", "b", "c", "d", "e"] });
    expect(tooMany).toMatchObject({ param: "stop", code: "array_above_max_length" });
    expect(chatError({ stop: 5 })).toMatchObject({ param: "stop", code: "invalid_type" });
    expect(chatError({ stop: ["a", 5] })).toMatchObject({ param: "stop.1", code: "invalid_type" });
  });

  it("requires logprobs: true for top_logprobs", () => {
    expect(chatError({ top_logprobs: 3 })).toMatchObject({ param: "top_logprobs" });
    expect(chatError({ top_logprobs: 3, logprobs: false })).toMatchObject({
      param: "top_logprobs",
    });
    expect(chatError({ top_logprobs: 3 }).message).toMatch(/logprobs/);
    expect(parseChat({ top_logprobs: 0 }).ok).toBe(true);
  });
});

describe("parseJsonBody: cache_salt", () => {
  const longest = "s".repeat(MAX_CACHE_SALT_LENGTH);

  it("accepts 1 to 256 characters, null or nothing, on both endpoints", () => {
    for (const salt of ["x", longest]) {
      expect(chatOk({ cache_salt: salt }).cache_salt).toBe(salt);
      expect(completionOk({ cache_salt: salt }).cache_salt).toBe(salt);
    }
    expect(toGenerateFields(chatOk({ seed: 1, cache_salt: "x" }), "chat", noSeed).cacheSalt).toBe(
      "x",
    );
    expect(toGenerateFields(chatOk({ seed: 1, cache_salt: null }), "chat", noSeed).cacheSalt).toBe(
      null,
    );
    expect(toGenerateFields(completionOk({ seed: 1 }), "completion", noSeed).cacheSalt).toBe(null);
  });

  it.each([
    ["", "invalid_value"],
    [`${longest}s`, "invalid_value"],
    [5, "invalid_type"],
    [["x"], "invalid_type"],
  ])("rejects %j with a 400 that names the field", (salt, code) => {
    for (const e of [chatError({ cache_salt: salt }), completionError({ cache_salt: salt })]) {
      expect(e).toMatchObject({ kind: "invalid_request", param: "cache_salt", code });
      expect(e.message).toMatch(/'cache_salt'/);
    }
  });
});

describe("parseJsonBody: unsupported features", () => {
  it.each([
    [{ presence_penalty: 0.5 }, "presence_penalty"],
    [{ frequency_penalty: -1 }, "frequency_penalty"],
    [{ logit_bias: { "50256": -100 } }, "logit_bias"],
    [{ response_format: { type: "json_object" } }, "response_format"],
    [{ response_format: { type: "json_schema", json_schema: { name: "x" } } }, "response_format"],
    [{ tools: [{ type: "function", function: { name: "f" } }] }, "tools"],
    [{ functions: [{ name: "f" }] }, "functions"],
    [{ tool_choice: "required" }, "tool_choice"],
    [{ tool_choice: { type: "function", function: { name: "f" } } }, "tool_choice"],
    [{ function_call: { name: "f" } }, "function_call"],
  ])("chat rejects %j", (extra, param) => {
    const e = chatError(extra);
    expect(e).toMatchObject({ kind: "invalid_request", param });
    expect(e.code).toMatch(/^unsupported_/);
    expect(e.message).toMatch(/not supported/i);
  });

  it("chat accepts the neutral values of unsupported features", () => {
    const v = chatOk({
      presence_penalty: 0,
      frequency_penalty: 0,
      logit_bias: {},
      response_format: { type: "text" },
      tools: [],
      functions: [],
      tool_choice: "auto",
      function_call: "none",
    });
    expect(v.model).toBe("m");
  });

  it.each([
    [{ echo: true }, "echo"],
    [{ suffix: "end" }, "suffix"],
    [{ best_of: 3 }, "best_of"],
    [{ best_of: 3, n: 2 }, "best_of"],
    [{ presence_penalty: 1 }, "presence_penalty"],
    [{ logit_bias: { "1": 1 } }, "logit_bias"],
  ])("completions rejects %j", (extra, param) => {
    const e = completionError(extra);
    expect(e).toMatchObject({ kind: "invalid_request", param, code: "unsupported_value" });
    expect(e.message).toMatch(/not supported/i);
  });

  it("completions accepts echo false, empty suffix and best_of = n", () => {
    expect(parseCompletion({ echo: false, suffix: "", best_of: 2, n: 2 }).ok).toBe(true);
    expect(parseCompletion({ best_of: 1 }).ok).toBe(true);
  });
});

describe("parseJsonBody: completions prompt", () => {
  it.each([
    ["a string", "Hello"],
    ["an empty string", ""],
    ["strings", ["a", "b"]],
    ["token ids", [1, 2, 3]],
    ["token-id arrays", [[1, 2], [3]]],
  ])("accepts %s", (_, prompt) => {
    expect(completionOk({ prompt }).prompt).toEqual(prompt);
  });

  it("requires a prompt", () => {
    expect(errorOf(parseJsonBody('{"model":"m"}', CompletionSchema))).toMatchObject({
      param: "prompt",
      code: "missing_required_parameter",
    });
  });

  it("rejects mixed and wrongly typed prompts", () => {
    for (const prompt of [["a", 1], 5, { text: "x" }, [["a"]], [1.5]]) {
      const e = completionError({ prompt });
      expect(e.param).toMatch(/^prompt/);
      expect(e.kind).toBe("invalid_request");
    }
    expect(completionError({ prompt: ["a", 1] }).message).toMatch(/token-id arrays/);
  });

  it("rejects empty arrays and negative token ids", () => {
    expect(completionError({ prompt: [] })).toMatchObject({ param: "prompt", code: "empty_array" });
    expect(completionError({ prompt: [[1], []] })).toMatchObject({
      param: "prompt.1",
      code: "empty_array",
    });
    expect(completionError({ prompt: [1, -2] })).toMatchObject({ param: "prompt.1" });
  });

  it("validates completions logprobs as 0..5", () => {
    expect(completionOk({ logprobs: 0 }).logprobs).toBe(0);
    expect(completionOk({ logprobs: 5 }).logprobs).toBe(5);
    expect(completionError({ logprobs: 6 })).toMatchObject({ param: "logprobs" });
    expect(completionError({ logprobs: -1 })).toMatchObject({ param: "logprobs" });
    expect(completionError({ logprobs: true })).toMatchObject({
      param: "logprobs",
      code: "invalid_type",
    });
  });
});

describe("toGenerateFields: chat", () => {
  it("maps messages, joining text parts and nulls to empty strings", () => {
    const body = chatOk({
      messages: [
        { role: "developer", content: "dev" },
        {
          role: "system",
          content: [
            { type: "text", text: "a" },
            { type: "text", text: "b" },
          ],
        },
        { role: "user", content: "u" },
        { role: "assistant", content: null },
        { role: "tool", content: [{ type: "text", text: "t" }] },
      ],
    });
    const f = toGenerateFields(body, "chat", () => 7);
    expect(f.input).toEqual({
      kind: "chat",
      messages: [
        { role: "developer", content: "dev" },
        { role: "system", content: "ab" },
        { role: "user", content: "u" },
        { role: "assistant", content: "" },
        { role: "tool", content: "t" },
      ],
    });
  });

  it("applies the defaults", () => {
    const drawSeed = vi.fn(() => 1234);
    const f = toGenerateFields(chatOk({}), "chat", drawSeed);
    expect(drawSeed).toHaveBeenCalledOnce();
    expect(f).toEqual({
      input: { kind: "chat", messages: [{ role: "user", content: "Hi" }] },
      n: 1,
      maxTokens: null,
      sampling: {
        temperature: 1,
        topP: 1,
        topK: 0,
        seed: 1234,
        stop: [],
        ignoreEos: false,
        logprobs: false,
        topLogprobs: 0,
      },
      stream: false,
      includeUsage: false,
      cacheSalt: null,
      kvCache: null,
    });
  });

  it("maps kv_cache to the engine's names", () => {
    const f = toGenerateFields(
      chatOk({
        seed: 1,
        kv_cache: {
          policy: "raas",
          budget: 128,
          page_size: 32,
          refresh_share: 0.25,
          aggregate: "max",
        },
      }),
      "chat",
      noSeed,
    );
    expect(f.kvCache).toEqual({
      policy: "raas",
      budget: 128,
      pageSize: 32,
      refreshShare: 0.25,
      aggregate: "max",
    });
  });

  it("treats null like absent", () => {
    const f = toGenerateFields(
      chatOk({ temperature: null, top_p: null, top_k: null, n: null, stop: null, seed: null }),
      "chat",
      () => 9,
    );
    expect(f.sampling).toMatchObject({ temperature: 1, topP: 1, topK: 0, seed: 9, stop: [] });
    expect(f.n).toBe(1);
  });

  it("maps every sampling parameter", () => {
    const f = toGenerateFields(
      chatOk({
        temperature: 0,
        top_p: 0.5,
        top_k: 40,
        seed: 0,
        stop: ["a", "", "b"],
        n: 3,
        ignore_eos: true,
        logprobs: true,
        top_logprobs: 4,
      }),
      "chat",
      noSeed,
    );
    expect(f.n).toBe(3);
    expect(f.sampling).toEqual({
      temperature: 0,
      topP: 0.5,
      topK: 40,
      seed: 0,
      stop: ["a", "b"],
      ignoreEos: true,
      logprobs: true,
      topLogprobs: 4,
    });
  });

  it("maps top_k -1 to 0 and a single stop string to a list", () => {
    const f = toGenerateFields(chatOk({ top_k: -1, stop: "END", seed: 3 }), "chat", noSeed);
    expect(f.sampling.topK).toBe(0);
    expect(f.sampling.stop).toEqual(["END"]);
    expect(toGenerateFields(chatOk({ stop: "", seed: 3 }), "chat", noSeed).sampling.stop).toEqual(
      [],
    );
  });

  it("prefers max_completion_tokens over max_tokens", () => {
    const m = (extra: Record<string, unknown>) =>
      toGenerateFields(chatOk({ seed: 1, ...extra }), "chat", noSeed).maxTokens;
    expect(m({ max_tokens: 10 })).toBe(10);
    expect(m({ max_completion_tokens: 20 })).toBe(20);
    expect(m({ max_tokens: 10, max_completion_tokens: 20 })).toBe(20);
    expect(m({ max_tokens: 10, max_completion_tokens: null })).toBe(10);
    expect(m({})).toBeNull();
  });

  it("logprobs: true without top_logprobs asks for 0 alternatives", () => {
    const f = toGenerateFields(chatOk({ logprobs: true, seed: 1 }), "chat", noSeed);
    expect(f.sampling).toMatchObject({ logprobs: true, topLogprobs: 0 });
  });

  it("include_usage counts only when streaming", () => {
    const g = (extra: Record<string, unknown>) =>
      toGenerateFields(chatOk({ seed: 1, ...extra }), "chat", noSeed);
    expect(g({ stream: true })).toMatchObject({ stream: true, includeUsage: false });
    expect(g({ stream: true, stream_options: { include_usage: true } })).toMatchObject({
      stream: true,
      includeUsage: true,
    });
    expect(g({ stream: true, stream_options: { include_usage: false } }).includeUsage).toBe(false);
    expect(g({ stream: false, stream_options: { include_usage: true } })).toMatchObject({
      stream: false,
      includeUsage: false,
    });
  });
});

describe("toGenerateFields: completions", () => {
  const prompts = (prompt: unknown) =>
    toGenerateFields(completionOk({ prompt, seed: 1 }), "completion", noSeed).input;

  it("normalises every prompt form to a list", () => {
    expect(prompts("Hello")).toEqual({ kind: "completion", prompts: ["Hello"] });
    expect(prompts("")).toEqual({ kind: "completion", prompts: [""] });
    expect(prompts(["a", "b"])).toEqual({ kind: "completion", prompts: ["a", "b"] });
    expect(prompts([5, 6])).toEqual({ kind: "completion", prompts: [[5, 6]] });
    expect(prompts([[5], [6, 7]])).toEqual({ kind: "completion", prompts: [[5], [6, 7]] });
  });

  it("maps logprobs k to logprobs + k alternatives", () => {
    const lp = (logprobs: unknown) =>
      toGenerateFields(completionOk({ logprobs, seed: 1 }), "completion", noSeed).sampling;
    expect(lp(undefined)).toMatchObject({ logprobs: false, topLogprobs: 0 });
    expect(lp(null)).toMatchObject({ logprobs: false, topLogprobs: 0 });
    expect(lp(0)).toMatchObject({ logprobs: true, topLogprobs: 0 });
    expect(lp(3)).toMatchObject({ logprobs: true, topLogprobs: 3 });
  });

  it("maps the shared parameters like chat", () => {
    const drawSeed = vi.fn(() => 77);
    const f = toGenerateFields(
      completionOk({
        max_tokens: 5,
        temperature: 0.2,
        top_p: 0.8,
        top_k: 3,
        stop: ["x"],
        n: 2,
        stream: true,
        stream_options: { include_usage: true },
        ignore_eos: true,
        cache_salt: "s1",
      }),
      "completion",
      drawSeed,
    );
    expect(drawSeed).toHaveBeenCalledOnce();
    expect(f).toEqual({
      input: { kind: "completion", prompts: ["Hi"] },
      n: 2,
      maxTokens: 5,
      sampling: {
        temperature: 0.2,
        topP: 0.8,
        topK: 3,
        seed: 77,
        stop: ["x"],
        ignoreEos: true,
        logprobs: false,
        topLogprobs: 0,
      },
      stream: true,
      includeUsage: true,
      cacheSalt: "s1",
      kvCache: null,
    });
  });
});
