/**
 * OpenAI response bodies from an Npu's GenerateEvents: the per-choice accumulation (text and
 * logprobs in OpenAI's chat and completion shapes) and `collectResponse`, which drains the events
 * into one `chat.completion` / `text_completion` body. Used by the worker (non-streaming routes,
 * and the SSE formatter's choice state) and by the JobExecutor (batch jobs). Pure.
 */
import { AppError, type ErrorInfo, errorInfo } from "../errors.ts";
import type { GenerateEvent, TokenLogprobEntry } from "../protocol/messages.ts";

export interface ResponseMeta {
  id: string;
  created: number;
  model: string;
  kind: "chat" | "completion";
  /** All choices (completions: prompts * n, prompt-major). */
  numChoices: number;
  /**
   * Non-streaming only: whether logprobs were requested. Absent: inferred from the events (any
   * delta carrying logprobs); set it so that a choice with no tokens gets empty logprobs, not
   * null. Streaming chunks carry logprobs exactly when they carry tokens that had them.
   */
  logprobs?: boolean;
  /** `system_fingerprint` on every body and chunk; default null. */
  systemFingerprint?: string | null;
}

export type FinishReason = "stop" | "length";

// ---------------------------------------------------------------------------------------------
// Logprobs shapes

interface ChatLogprobContent {
  token: string;
  logprob: number;
  bytes: number[];
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per token: the requested top alternatives plus the sampled token, token -> logprob. */
  top_logprobs: Record<string, number>[];
  /** Per token: offset in code points into the choice's generated text. */
  text_offset: number[];
}

function chatContent(e: TokenLogprobEntry): ChatLogprobContent {
  return {
    token: e.token,
    logprob: e.logprob,
    bytes: e.bytes,
    top_logprobs: e.topLogprobs.map((t) => ({
      token: t.token,
      logprob: t.logprob,
      bytes: t.bytes,
    })),
  };
}

function topLogprobsDict(e: TokenLogprobEntry): Record<string, number> {
  const d: Record<string, number> = {};
  for (const t of e.topLogprobs) if (!(t.token in d)) d[t.token] = t.logprob;
  if (!(e.token in d)) d[e.token] = e.logprob;
  return d;
}

function codePoints(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function emptyCompletionLogprobs(): CompletionLogprobs {
  return { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
}

/** Per-choice accumulation shared by both paths. */
export class ChoiceState {
  text = "";
  /** Length of `text` in code points. */
  textLen = 0;
  finishReason: FinishReason | null = null;
  /** Logprobs not yet sent (streaming) or all of them (non-streaming). */
  chat: ChatLogprobContent[] = [];
  completion: CompletionLogprobs = emptyCompletionLogprobs();
  hasLogprobs = false;

  /** Appends a delta's text and logprobs (text offsets relative to the choice's text). */
  add(text: string, entries: TokenLogprobEntry[] | null): void {
    const base = this.textLen;
    const len = codePoints(text);
    if (entries) {
      this.hasLogprobs = true;
      let cum = 0;
      for (const e of entries) {
        this.chat.push(chatContent(e));
        this.completion.tokens.push(e.token);
        this.completion.token_logprobs.push(e.logprob);
        this.completion.top_logprobs.push(topLogprobsDict(e));
        this.completion.text_offset.push(base + Math.min(cum, len));
        cum += codePoints(e.token);
      }
    }
    this.text += text;
    this.textLen += len;
  }

  /** The pending logprobs in the response's shape (null when none were produced). */
  takeLogprobs(kind: "chat" | "completion", wanted: boolean): object | null {
    if (!wanted && !this.hasLogprobs) return null;
    const out =
      kind === "chat" ? { content: this.chat, refusal: null } : (this.completion as object);
    this.chat = [];
    this.completion = emptyCompletionLogprobs();
    this.hasLogprobs = false;
    return out;
  }
}

export function usageBody(e: Extract<GenerateEvent, { type: "usage" }>) {
  return {
    prompt_tokens: e.promptTokens,
    completion_tokens: e.completionTokens,
    total_tokens: e.totalTokens,
    prompt_tokens_details: { cached_tokens: e.cachedTokens ?? 0 },
    ...(e.kvCache ? { kv_cache: e.kvCache } : {}),
  };
}

export function thrownToError(err: unknown): ErrorInfo {
  if (err instanceof AppError) return err.toInfo();
  return errorInfo("internal", "The generation stream failed unexpectedly.");
}

export const TRUNCATED = errorInfo("internal", "The generation stream ended before it completed.");

// ---------------------------------------------------------------------------------------------
// Non-streaming

/** Drains the events into one `chat.completion` / `text_completion` body. */
export async function collectResponse(
  events: AsyncIterable<GenerateEvent>,
  meta: ResponseMeta,
): Promise<{ ok: true; body: object } | { ok: false; error: ErrorInfo }> {
  const choices = Array.from({ length: meta.numChoices }, () => new ChoiceState());
  let usage: ReturnType<typeof usageBody> | null = null;
  let sawLogprobs = false;
  try {
    for await (const e of events) {
      if (e.type === "error") return { ok: false, error: e.error };
      if (e.type === "usage") {
        usage = usageBody(e);
        continue;
      }
      const c = choices[e.index];
      if (!c) continue;
      if (e.type === "delta") {
        if (e.logprobs) sawLogprobs = true;
        c.add(e.text, e.logprobs);
      } else {
        c.finishReason = e.finishReason;
      }
    }
  } catch (err) {
    return { ok: false, error: thrownToError(err) };
  }
  if (!usage) return { ok: false, error: TRUNCATED };

  const wanted = meta.logprobs ?? sawLogprobs;
  const common = {
    id: meta.id,
    object: meta.kind === "chat" ? "chat.completion" : "text_completion",
    created: meta.created,
    model: meta.model,
    system_fingerprint: meta.systemFingerprint ?? null,
  };
  const body =
    meta.kind === "chat"
      ? {
          ...common,
          choices: choices.map((c, index) => ({
            index,
            message: { role: "assistant", content: c.text, refusal: null },
            logprobs: c.takeLogprobs("chat", wanted),
            finish_reason: c.finishReason ?? "stop",
          })),
          usage,
        }
      : {
          ...common,
          choices: choices.map((c, index) => ({
            index,
            text: c.text,
            logprobs: c.takeLogprobs("completion", wanted),
            finish_reason: c.finishReason ?? "stop",
          })),
          usage,
        };
  return { ok: true, body };
}
