/**
 * OpenAI response formatting: non-streaming bodies, SSE chunks (n=2 interleaving, logprobs,
 * include_usage, errors mid-stream, client cancellation) and NDJSON decoding with early release.
 */

import { describe, expect, it, vi } from "vitest";
import { AppError, errorInfo } from "../../../shared/errors.ts";
import { decodeEventBatches, decodeEvents, encodeEvent } from "../../../shared/protocol/codec.ts";
import type { GenerateEvent, TokenLogprobEntry } from "../../../shared/protocol/messages.ts";
import {
  collectResponse,
  type ResponseMeta,
  sseResponseStream,
} from "../../../workers/openai/format.ts";
import { parseSse, readAll } from "../../helpers/sse.ts";

const META = { id: "chatcmpl-1", created: 1700000000, model: "tiny" };

function chatMeta(numChoices = 1, extra: Partial<ResponseMeta> = {}): ResponseMeta {
  return { ...META, kind: "chat", numChoices, ...extra };
}

function completionMeta(numChoices = 1, extra: Partial<ResponseMeta> = {}): ResponseMeta {
  return { ...META, id: "cmpl-1", kind: "completion", numChoices, ...extra };
}

/** One batch per event, as a stream whose every chunk held one line. */
async function* batches(events: GenerateEvent[]): AsyncGenerator<GenerateEvent[]> {
  for (const e of events) yield [e];
}

async function* fromArray(events: GenerateEvent[]): AsyncGenerator<GenerateEvent> {
  for (const e of events) yield e;
}

const delta = (
  index: number,
  text: string,
  logprobs: TokenLogprobEntry[] | null = null,
): GenerateEvent => ({
  type: "delta",
  index,
  text,
  tokenIds: [1],
  logprobs,
});
const finish = (index: number, finishReason: "stop" | "length" = "stop"): GenerateEvent => ({
  type: "finish",
  index,
  finishReason,
  numOutputTokens: 2,
});
const usage = (promptTokens = 5, completionTokens = 4): GenerateEvent => ({
  type: "usage",
  promptTokens,
  completionTokens,
  totalTokens: promptTokens + completionTokens,
});

function lp(token: string, logprob: number, top: [string, number][] = []): TokenLogprobEntry {
  const bytes = (t: string) => [...new TextEncoder().encode(t)];
  return {
    token,
    logprob,
    bytes: bytes(token),
    topLogprobs: top.map(([t, l]) => ({ token: t, logprob: l, bytes: bytes(t) })),
  };
}

/** n=2 chat: choices interleaved, choice 1 finishes first by length. */
const INTERLEAVED: GenerateEvent[] = [
  delta(0, "Hel"),
  delta(1, "Good"),
  delta(0, "lo"),
  delta(1, "bye"),
  finish(1, "length"),
  delta(0, "!"),
  finish(0, "stop"),
  usage(5, 4),
];

/** An NDJSON byte stream of `events` that then stalls until cancelled. */
function stallingSource(events: GenerateEvent[]) {
  const cancelled = vi.fn();
  let resolveCancelled: () => void = () => {};
  const cancelledPromise = new Promise<void>((r) => {
    resolveCancelled = r;
  });
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < events.length) {
        controller.enqueue(encodeEvent(events[i++]!));
        return;
      }
      return new Promise<void>(() => {}); // stalls
    },
    cancel(reason) {
      cancelled(reason);
      resolveCancelled();
    },
  });
  return { stream, cancelled, cancelledPromise };
}

function ndjson(events: GenerateEvent[]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(controller) {
      for (const e of events) controller.enqueue(encodeEvent(e));
      controller.close();
    },
  });
}

function chunksOf(frames: (object | "[DONE]")[]): Record<string, unknown>[] {
  return frames.filter((f): f is Record<string, unknown> => f !== "[DONE]");
}

describe("collectResponse", () => {
  it("builds a chat.completion with n=2 interleaved choices", async () => {
    const r = await collectResponse(fromArray(INTERLEAVED), chatMeta(2));
    expect(r).toEqual({
      ok: true,
      body: {
        id: "chatcmpl-1",
        object: "chat.completion",
        created: 1700000000,
        model: "tiny",
        system_fingerprint: null,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: "Hello!", refusal: null },
            logprobs: null,
            finish_reason: "stop",
          },
          {
            index: 1,
            message: { role: "assistant", content: "Goodbye", refusal: null },
            logprobs: null,
            finish_reason: "length",
          },
        ],
        usage: {
          prompt_tokens: 5,
          completion_tokens: 4,
          total_tokens: 9,
          prompt_tokens_details: { cached_tokens: 0 },
        },
      },
    });
  });

  it("builds a text_completion", async () => {
    const r = await collectResponse(
      fromArray(INTERLEAVED),
      completionMeta(2, { systemFingerprint: "fp_x" }),
    );
    expect(r.ok && r.body).toEqual({
      id: "cmpl-1",
      object: "text_completion",
      created: 1700000000,
      model: "tiny",
      system_fingerprint: "fp_x",
      choices: [
        { index: 0, text: "Hello!", logprobs: null, finish_reason: "stop" },
        { index: 1, text: "Goodbye", logprobs: null, finish_reason: "length" },
      ],
      usage: {
        prompt_tokens: 5,
        completion_tokens: 4,
        total_tokens: 9,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    });
  });

  it("shapes chat logprobs as content entries with top_logprobs", async () => {
    const events = [
      delta(0, "Hi", [
        lp("Hi", -0.1, [
          ["Hi", -0.1],
          ["Hey", -2.5],
        ]),
      ]),
      delta(0, " there", [
        lp(" there", -0.5, [
          [" there", -0.5],
          [" you", -1],
        ]),
      ]),
      finish(0),
      usage(),
    ];
    const r = await collectResponse(fromArray(events), chatMeta(1, { logprobs: true }));
    if (!r.ok) throw new Error("expected ok");
    const choice = (r.body as { choices: { logprobs: unknown }[] }).choices[0]!;
    expect(choice.logprobs).toEqual({
      content: [
        {
          token: "Hi",
          logprob: -0.1,
          bytes: [72, 105],
          top_logprobs: [
            { token: "Hi", logprob: -0.1, bytes: [72, 105] },
            { token: "Hey", logprob: -2.5, bytes: [72, 101, 121] },
          ],
        },
        {
          token: " there",
          logprob: -0.5,
          bytes: [32, 116, 104, 101, 114, 101],
          top_logprobs: [
            { token: " there", logprob: -0.5, bytes: [32, 116, 104, 101, 114, 101] },
            { token: " you", logprob: -1, bytes: [32, 121, 111, 117] },
          ],
        },
      ],
      refusal: null,
    });
  });

  it("shapes completion logprobs with dict top_logprobs and code-point text offsets", async () => {
    const events = [
      // Two tokens in one delta.
      delta(0, "ab", [lp("a", -1, [["x", -0.5]]), lp("b", -2, [["b", -2]])]),
      // A token that produced no text yet (partial UTF-8), then the one completing "é".
      delta(0, "", [lp("<0xC3>", -0.3)]),
      delta(0, "é", [lp("<0xA9>", -0.2)]),
      delta(0, "c", [
        lp("c", -0.4, [
          ["d", -0.1],
          ["c", -0.4],
        ]),
      ]),
      finish(0, "length"),
      usage(),
    ];
    const r = await collectResponse(fromArray(events), completionMeta(1, { logprobs: true }));
    if (!r.ok) throw new Error("expected ok");
    const choice = (r.body as { choices: { text: string; logprobs: unknown }[] }).choices[0]!;
    expect(choice.text).toBe("abéc");
    expect(choice.logprobs).toEqual({
      tokens: ["a", "b", "<0xC3>", "<0xA9>", "c"],
      token_logprobs: [-1, -2, -0.3, -0.2, -0.4],
      // The requested alternatives plus the sampled token.
      top_logprobs: [
        { x: -0.5, a: -1 },
        { b: -2 },
        { "<0xC3>": -0.3 },
        { "<0xA9>": -0.2 },
        { d: -0.1, c: -0.4 },
      ],
      text_offset: [0, 1, 2, 2, 3],
    });
  });

  it("gives empty logprobs (not null) when requested but no tokens came", async () => {
    const events = [finish(0), usage(5, 0)];
    const chat = await collectResponse(fromArray(events), chatMeta(1, { logprobs: true }));
    expect(
      chat.ok && (chat.body as { choices: { logprobs: unknown }[] }).choices[0]!.logprobs,
    ).toEqual({ content: [], refusal: null });
    const cmpl = await collectResponse(fromArray(events), completionMeta(1, { logprobs: true }));
    expect(
      cmpl.ok && (cmpl.body as { choices: { logprobs: unknown }[] }).choices[0]!.logprobs,
    ).toEqual({ tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] });
  });

  it("returns the error event's error", async () => {
    const error = errorInfo("capacity", "No capacity for model tiny.", null, "no_capacity");
    const r = await collectResponse(
      fromArray([delta(0, "a"), { type: "error", error }, usage()]),
      chatMeta(),
    );
    expect(r).toEqual({ ok: false, error });
  });

  it("cancels the source stream when an error event arrives early", async () => {
    const error = errorInfo("internal", "boom");
    const src = stallingSource([delta(0, "a"), { type: "error", error }]);
    const r = await collectResponse(decodeEvents(src.stream.getReader()), chatMeta());
    expect(r).toEqual({ ok: false, error });
    await src.cancelledPromise;
    expect(src.cancelled).toHaveBeenCalledOnce();
  });

  it("fails when the stream ends without usage, or throws", async () => {
    const truncated = await collectResponse(fromArray([delta(0, "a"), finish(0)]), chatMeta());
    expect(truncated).toMatchObject({ ok: false, error: { kind: "internal" } });

    async function* throwing(err: unknown): AsyncGenerator<GenerateEvent> {
      yield delta(0, "a");
      throw err;
    }
    const thrown = await collectResponse(throwing(new Error("socket reset")), chatMeta());
    expect(thrown).toMatchObject({ ok: false, error: { kind: "internal" } });
    expect(!thrown.ok && thrown.error.message).not.toContain("socket reset");
    const app = await collectResponse(
      throwing(new AppError("overloaded", "Npu went away.")),
      chatMeta(),
    );
    expect(app).toEqual({ ok: false, error: errorInfo("overloaded", "Npu went away.") });
  });
});

describe("sseResponseStream: chat", () => {
  it("writes a batch of coalesced events as one chunk with the same frames", async () => {
    const meta = { ...chatMeta(2), includeUsage: true };
    const single = await readAll(sseResponseStream(batches(INTERLEAVED), meta));
    async function* oneBatch(): AsyncGenerator<GenerateEvent[]> {
      yield INTERLEAVED;
    }
    const reader = sseResponseStream(oneBatch(), meta).getReader();
    const chunks: string[] = [];
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(new TextDecoder().decode(value));
    }
    expect(chunks.join("")).toBe(single);
    // the two role chunks (one per choice), the whole batch, then [DONE]
    expect(chunks).toHaveLength(4);
    expect(chunks[3]).toBe("data: [DONE]\n\n");
  });

  it("streams n=2 interleaved deltas as chat.completion.chunk frames", async () => {
    const onClose = vi.fn();
    const text = await readAll(
      sseResponseStream(batches(INTERLEAVED), { ...chatMeta(2), includeUsage: false }, onClose),
    );
    expect(text.startsWith("data: {")).toBe(true);
    expect(text.endsWith("\n\ndata: [DONE]\n\n")).toBe(true);
    const frames = parseSse(text);
    expect(frames.at(-1)).toBe("[DONE]");
    expect(frames.filter((f) => f === "[DONE]")).toHaveLength(1);
    const chunks = chunksOf(frames);
    for (const c of chunks) {
      expect(c).toMatchObject({
        id: "chatcmpl-1",
        object: "chat.completion.chunk",
        created: 1700000000,
        model: "tiny",
        system_fingerprint: null,
      });
      expect(c).not.toHaveProperty("usage");
    }
    expect(chunks.map((c) => c.choices)).toEqual([
      [
        {
          index: 0,
          delta: { role: "assistant", content: "" },
          logprobs: null,
          finish_reason: null,
        },
      ],
      [
        {
          index: 1,
          delta: { role: "assistant", content: "" },
          logprobs: null,
          finish_reason: null,
        },
      ],
      [{ index: 0, delta: { content: "Hel" }, logprobs: null, finish_reason: null }],
      [{ index: 1, delta: { content: "Good" }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: { content: "lo" }, logprobs: null, finish_reason: null }],
      [{ index: 1, delta: { content: "bye" }, logprobs: null, finish_reason: null }],
      [{ index: 1, delta: {}, logprobs: null, finish_reason: "length" }],
      [{ index: 0, delta: { content: "!" }, logprobs: null, finish_reason: null }],
      [{ index: 0, delta: {}, logprobs: null, finish_reason: "stop" }],
    ]);
    expect(onClose).toHaveBeenCalledExactlyOnceWith("done");
  });

  it("with include_usage: usage null on every chunk, then a usage chunk with no choices", async () => {
    const text = await readAll(
      sseResponseStream(batches(INTERLEAVED), { ...chatMeta(2), includeUsage: true }),
    );
    const frames = parseSse(text);
    expect(frames.at(-1)).toBe("[DONE]");
    const chunks = chunksOf(frames);
    const last = chunks.at(-1)!;
    expect(last).toEqual({
      id: "chatcmpl-1",
      object: "chat.completion.chunk",
      created: 1700000000,
      model: "tiny",
      system_fingerprint: null,
      choices: [],
      usage: {
        prompt_tokens: 5,
        completion_tokens: 4,
        total_tokens: 9,
        prompt_tokens_details: { cached_tokens: 0 },
      },
    });
    for (const c of chunks.slice(0, -1)) {
      expect(c).toHaveProperty("usage", null);
      expect((c.choices as unknown[]).length).toBe(1);
    }
  });

  it("skips empty-text deltas and carries their logprobs to the next chunk", async () => {
    const events = [
      delta(0, "", [lp("<0xC3>", -0.3)]),
      delta(0, "é", [lp("<0xA9>", -0.2, [["<0xA9>", -0.2]])]),
      delta(0, ""),
      delta(0, "", [lp("<0xE2>", -0.1)]),
      finish(0),
      usage(),
    ];
    const frames = parseSse(
      await readAll(
        sseResponseStream(batches(events), {
          ...chatMeta(1, { logprobs: true }),
          includeUsage: false,
        }),
      ),
    );
    const choices = chunksOf(frames).map((c) => (c.choices as unknown[])[0]);
    expect(choices).toEqual([
      { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
      {
        index: 0,
        delta: { content: "é" },
        logprobs: {
          content: [
            { token: "<0xC3>", logprob: -0.3, bytes: [60, 48, 120, 67, 51, 62], top_logprobs: [] },
            {
              token: "<0xA9>",
              logprob: -0.2,
              bytes: [60, 48, 120, 65, 57, 62],
              top_logprobs: [{ token: "<0xA9>", logprob: -0.2, bytes: [60, 48, 120, 65, 57, 62] }],
            },
          ],
          refusal: null,
        },
        finish_reason: null,
      },
      // Logprobs of a trailing token that produced no text ride on the finish chunk.
      {
        index: 0,
        delta: {},
        logprobs: {
          content: [
            { token: "<0xE2>", logprob: -0.1, bytes: [60, 48, 120, 69, 50, 62], top_logprobs: [] },
          ],
          refusal: null,
        },
        finish_reason: "stop",
      },
    ]);
  });

  it("turns an error event mid-stream into one error frame without [DONE]", async () => {
    const onClose = vi.fn();
    const error = errorInfo(
      "overloaded",
      "The Npu serving this request was lost.",
      null,
      "npu_lost",
    );
    const text = await readAll(
      sseResponseStream(
        batches([delta(0, "a"), { type: "error", error }, delta(0, "never"), usage()]),
        { ...chatMeta(), includeUsage: true },
        onClose,
      ),
    );
    const frames = parseSse(text);
    expect(frames).not.toContain("[DONE]");
    expect(frames.at(-1)).toEqual({
      error: {
        message: "The Npu serving this request was lost.",
        type: "server_error",
        param: null,
        code: "npu_lost",
      },
    });
    expect(frames.filter((f) => f !== "[DONE]" && "error" in f)).toHaveLength(1);
    expect(text).not.toContain("never");
    expect(onClose).toHaveBeenCalledExactlyOnceWith("error");
  });

  it("reports a source that throws or ends without usage as an error frame", async () => {
    async function* throwing(): AsyncGenerator<GenerateEvent[]> {
      yield [delta(0, "a")];
      throw new Error("reset");
    }
    for (const source of [throwing(), batches([delta(0, "a"), finish(0)])]) {
      const frames = parseSse(
        await readAll(sseResponseStream(source, { ...chatMeta(), includeUsage: false })),
      );
      expect(frames).not.toContain("[DONE]");
      expect(frames.at(-1)).toMatchObject({ error: { type: "server_error" } });
    }
  });

  it("calls onClose and cancels the source stream when the client cancels", async () => {
    const src = stallingSource([delta(0, "a"), delta(0, "b")]);
    const onClose = vi.fn();
    const body = sseResponseStream(
      decodeEventBatches(src.stream.getReader()),
      { ...chatMeta(), includeUsage: false },
      onClose,
    );
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let text = "";
    // Role chunk, "a", "b"; the next read waits on the stalled source.
    for (let i = 0; i < 3; i++) text += decoder.decode((await reader.read()).value);
    expect(chunksOf(parseSse(text))).toHaveLength(3);
    const pending = reader.read();
    // Let the pull reach the stalled source, so the cancel hits an in-flight read.
    await new Promise((r) => setTimeout(r, 20));
    await reader.cancel();
    expect(onClose).toHaveBeenCalledExactlyOnceWith("cancelled");
    await src.cancelledPromise;
    expect(src.cancelled).toHaveBeenCalledOnce();
    expect((await pending).done).toBe(true);
  });
});

describe("sseResponseStream: completions", () => {
  it("streams text_completion chunks with a finish chunk per choice", async () => {
    const text = await readAll(
      sseResponseStream(batches(INTERLEAVED), { ...completionMeta(2), includeUsage: true }),
    );
    const frames = parseSse(text);
    expect(frames.at(-1)).toBe("[DONE]");
    const chunks = chunksOf(frames);
    for (const c of chunks) {
      expect(c).toMatchObject({ id: "cmpl-1", object: "text_completion", created: 1700000000 });
    }
    expect(chunks.map((c) => c.choices)).toEqual([
      [{ index: 0, text: "Hel", logprobs: null, finish_reason: null }],
      [{ index: 1, text: "Good", logprobs: null, finish_reason: null }],
      [{ index: 0, text: "lo", logprobs: null, finish_reason: null }],
      [{ index: 1, text: "bye", logprobs: null, finish_reason: null }],
      [{ index: 1, text: "", logprobs: null, finish_reason: "length" }],
      [{ index: 0, text: "!", logprobs: null, finish_reason: null }],
      [{ index: 0, text: "", logprobs: null, finish_reason: "stop" }],
      [],
    ]);
    expect(chunks.at(-1)!.usage).toEqual({
      prompt_tokens: 5,
      completion_tokens: 4,
      total_tokens: 9,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
  });

  it("gives per-chunk logprobs with offsets into the whole choice text", async () => {
    const events = [
      delta(0, "ab", [lp("a", -1, [["x", -0.5]]), lp("b", -2)]),
      delta(1, "z", [lp("z", -3)]),
      delta(0, "c", [lp("c", -0.4)]),
      finish(0),
      finish(1),
      usage(),
    ];
    const frames = parseSse(
      await readAll(
        sseResponseStream(batches(events), {
          ...completionMeta(2, { logprobs: true }),
          includeUsage: false,
        }),
      ),
    );
    const choices = chunksOf(frames).map((c) => (c.choices as { logprobs: unknown }[])[0]!);
    expect(choices.map((c) => c.logprobs)).toEqual([
      {
        tokens: ["a", "b"],
        token_logprobs: [-1, -2],
        top_logprobs: [{ x: -0.5, a: -1 }, { b: -2 }],
        text_offset: [0, 1],
      },
      { tokens: ["z"], token_logprobs: [-3], top_logprobs: [{ z: -3 }], text_offset: [0] },
      { tokens: ["c"], token_logprobs: [-0.4], top_logprobs: [{ c: -0.4 }], text_offset: [2] },
      null,
      null,
    ]);
  });
});

describe("decodeEvents", () => {
  it("decodes events split at arbitrary byte boundaries", async () => {
    const events = [delta(0, "héllo ✓"), finish(0), usage()];
    const bytes = new Uint8Array(events.flatMap((e) => [...encodeEvent(e)]));
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 3) controller.enqueue(bytes.slice(i, i + 3));
        controller.close();
      },
    });
    const out: GenerateEvent[] = [];
    for await (const e of decodeEvents(stream.getReader())) out.push(e);
    expect(out).toEqual(events);
  });

  it("decodes a last line without its newline", async () => {
    const text = `${JSON.stringify(delta(0, "a"))}\n${JSON.stringify(usage())}`;
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(text));
        controller.close();
      },
    });
    const out: GenerateEvent[] = [];
    for await (const e of decodeEvents(stream.getReader())) out.push(e);
    expect(out).toEqual([delta(0, "a"), usage()]);
  });

  it("cancels the upstream when the consumer breaks early", async () => {
    const src = stallingSource([delta(0, "a"), delta(0, "b")]);
    for await (const e of decodeEvents(src.stream.getReader())) {
      expect(e).toEqual(delta(0, "a"));
      break;
    }
    await src.cancelledPromise;
    expect(src.cancelled).toHaveBeenCalledOnce();
  });

  it("cancels the upstream on return() while a read is pending", async () => {
    const src = stallingSource([delta(0, "a")]);
    const it = decodeEvents(src.stream.getReader());
    expect((await it.next()).value).toEqual(delta(0, "a"));
    const pending = it.next(); // waits on the stalled source
    const returned = it.return(undefined);
    await src.cancelledPromise;
    expect(await pending).toEqual({ done: true, value: undefined });
    expect(await returned).toEqual({ done: true, value: undefined });
  });

  it("releases the stream after a normal end", async () => {
    const stream = ndjson([usage()]);
    const out: GenerateEvent[] = [];
    for await (const e of decodeEvents(stream.getReader())) out.push(e);
    expect(out).toEqual([usage()]);
    expect(stream.locked).toBe(false);
  });
});
