/**
 * OpenAI response formatting: turns an Npu's GenerateEvent stream into `chat.completion` /
 * `text_completion` bodies (`collectResponse`, in shared/serving/openai-response.ts, re-exported
 * here) or into an SSE stream of `chat.completion.chunk` / `text_completion` chunks ending in
 * `data: [DONE]` (`sseResponseStream`). Cancelling either end releases the other. No routing, no DO calls.
 */
import { type ErrorInfo, errorEnvelope } from "../../shared/errors.ts";
import type { GenerateEvent } from "../../shared/protocol/messages.ts";
import {
  ChoiceState,
  type ResponseMeta,
  TRUNCATED,
  thrownToError,
  usageBody,
} from "../../shared/serving/openai-response.ts";

export {
  collectResponse,
  type FinishReason,
  type ResponseMeta,
} from "../../shared/serving/openai-response.ts";

export const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-cache",
  connection: "keep-alive",
  "x-accel-buffering": "no",
} as const;

export interface StreamMeta extends ResponseMeta {
  /** stream_options.include_usage: `usage: null` on every chunk, then a usage-only chunk. */
  includeUsage: boolean;
}

/** Why an SSE stream ended: [DONE] sent, error frame sent, or the consumer cancelled. */
export type CloseReason = "done" | "error" | "cancelled";

// ---------------------------------------------------------------------------------------------
// Streaming

const encoder = new TextEncoder();

function frame(data: unknown): Uint8Array {
  return encoder.encode(`data: ${JSON.stringify(data)}\n\n`);
}

const DONE_FRAME = encoder.encode("data: [DONE]\n\n");

function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0] as Uint8Array;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * The events as an OpenAI SSE body. Chat: a role chunk per choice first, content deltas, a
 * `delta: {}` chunk with finish_reason per choice; completions: text chunks and a finish chunk
 * per choice. An error (event, thrown, or the source ending without usage) becomes one
 * `data: {"error": ...}` frame and ends the stream without [DONE]. `onClose` runs once when the
 * stream ends, with why; on "cancelled" (the client went away) the source iterator's `return()`
 * has been called. The source yields batches (`decodeEventBatches`): a batch's frames go out as
 * one chunk, so events the Npu coalesced under load stay one write.
 */
export function sseResponseStream(
  events: AsyncIterable<readonly GenerateEvent[]>,
  meta: StreamMeta,
  onClose?: (reason: CloseReason) => void,
): ReadableStream<Uint8Array> {
  const it = events[Symbol.asyncIterator]();
  const chat = meta.kind === "chat";
  const choices = Array.from({ length: meta.numChoices }, () => new ChoiceState());
  let sawUsage = false;
  let closed = false;

  const chunk = (choiceList: object[], usage?: object) => ({
    id: meta.id,
    object: chat ? "chat.completion.chunk" : "text_completion",
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint ?? null,
    choices: choiceList,
    ...(meta.includeUsage ? { usage: usage ?? null } : {}),
  });

  const releaseSource = () => {
    try {
      void Promise.resolve(it.return?.()).catch(() => {});
    } catch {
      // A throwing return() leaves nothing more to release.
    }
  };

  const notify = (reason: CloseReason) => {
    try {
      onClose?.(reason);
    } catch {
      // The stream's outcome does not depend on the callback.
    }
  };

  const end = (controller: ReadableStreamDefaultController<Uint8Array>, reason: CloseReason) => {
    closed = true;
    controller.close();
    if (reason === "error") releaseSource();
    notify(reason);
  };

  const fail = (controller: ReadableStreamDefaultController<Uint8Array>, error: ErrorInfo) => {
    controller.enqueue(frame(errorEnvelope(error)));
    end(controller, "error");
  };

  /** Frames for one non-error event. */
  const framesFor = (e: Exclude<GenerateEvent, { type: "error" }>): Uint8Array[] => {
    if (e.type === "usage") {
      if (sawUsage) return [];
      sawUsage = true;
      return meta.includeUsage ? [frame(chunk([], usageBody(e)))] : [];
    }
    const c = choices[e.index];
    if (!c) return [];
    if (e.type === "delta") {
      c.add(e.text, e.logprobs);
      // Tokens that produced no text yet (partial UTF-8): keep their logprobs for the next chunk.
      if (e.text.length === 0) return [];
      const logprobs = c.takeLogprobs(meta.kind, false);
      const choice = chat
        ? { index: e.index, delta: { content: e.text }, logprobs, finish_reason: null }
        : { index: e.index, text: e.text, logprobs, finish_reason: null };
      return [frame(chunk([choice]))];
    }
    if (c.finishReason) return [];
    c.finishReason = e.finishReason;
    const logprobs = c.takeLogprobs(meta.kind, false);
    const choice = chat
      ? { index: e.index, delta: {}, logprobs, finish_reason: e.finishReason }
      : { index: e.index, text: "", logprobs, finish_reason: e.finishReason };
    return [frame(chunk([choice]))];
  };

  return new ReadableStream<Uint8Array>({
    start(controller) {
      if (!chat) return;
      for (let index = 0; index < meta.numChoices; index++) {
        const delta = { role: "assistant", content: "" };
        controller.enqueue(frame(chunk([{ index, delta, logprobs: null, finish_reason: null }])));
      }
    },
    async pull(controller) {
      // Loop until something was enqueued: a pull that enqueues nothing is not called again.
      while (!closed) {
        let r: IteratorResult<readonly GenerateEvent[]>;
        try {
          r = await it.next();
        } catch (err) {
          if (!closed) fail(controller, thrownToError(err));
          return;
        }
        if (closed) return;
        if (r.done) {
          if (!sawUsage) return fail(controller, TRUNCATED);
          controller.enqueue(DONE_FRAME);
          return end(controller, "done");
        }
        const frames: Uint8Array[] = [];
        for (const e of r.value) {
          if (e.type === "error") {
            if (frames.length > 0) controller.enqueue(concat(frames));
            return fail(controller, e.error);
          }
          frames.push(...framesFor(e));
        }
        if (frames.length > 0) return controller.enqueue(concat(frames));
      }
    },
    cancel() {
      if (closed) return;
      closed = true;
      releaseSource();
      notify("cancelled");
    },
  });
}
