/**
 * One streamed `/v1/completions` request, timed as bench:serve and profile:path time it: greedy,
 * `ignore_eos`, usage in the last frame. TTFT: first chunk with text (or the finish chunk); TPOT:
 * (e2e - ttft) / (completion tokens - 1), for outputs of 2+ tokens; e2e: to [DONE]. Failures
 * (non-2xx, error frames, network errors, truncated streams, an abort) come back as values.
 */
import { SseParser } from "./traces.ts";

export type Outcome =
  | {
      ok: true;
      ttftMs: number;
      tpotMs: number | null;
      e2eMs: number;
      completionTokens: number;
      promptTokens: number;
      cachedTokens: number;
    }
  | { ok: false; reason: string; detail?: string };

interface StreamChunk {
  error?: { code?: string | null; type?: string; message?: string };
  choices?: { text?: string; finish_reason?: string | null }[];
  usage?: {
    prompt_tokens?: number;
    completion_tokens?: number;
    prompt_tokens_details?: { cached_tokens?: number } | null;
  } | null;
}

export const DRAIN_ABORT = "drain_timeout";

export interface CompletionRequest {
  baseUrl: string;
  apiKey: string;
  model: string;
  deployment?: string;
  /** Prompt token ids. */
  prompt: number[];
  maxTokens: number;
  signal: AbortSignal;
}

/** Sends one streamed completion and times it; never throws. */
export async function streamCompletion(r: CompletionRequest): Promise<Outcome> {
  const { baseUrl, apiKey, model, deployment, prompt, maxTokens, signal } = r;
  const body: Record<string, unknown> = {
    model,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (deployment !== undefined) body.deployment = deployment;
  const t0 = performance.now();
  try {
    const res = await fetch(`${baseUrl}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
    if (res.status < 200 || res.status >= 300 || !res.body) {
      const text = await res.text().catch(() => "");
      let code = "";
      let detail = text.slice(0, 300);
      try {
        const e = (JSON.parse(text) as StreamChunk).error;
        code = e?.code ?? e?.type ?? "";
        detail = e?.message ?? detail;
      } catch {
        code = "not_json"; // not our error envelope: a proxy's or the runtime's own response
      }
      return { ok: false, reason: `http_${res.status}${code ? `:${code}` : ""}`, detail };
    }
    const parser = new SseParser();
    const decoder = new TextDecoder();
    const reader = res.body.getReader();
    let ttftMs = -1;
    let usage: StreamChunk["usage"] = null;
    let done = false;
    while (!done) {
      const r = await reader.read();
      if (r.done) break;
      for (const data of parser.push(decoder.decode(r.value, { stream: true }))) {
        if (data === "[DONE]") {
          done = true;
          break;
        }
        let chunk: StreamChunk;
        try {
          chunk = JSON.parse(data) as StreamChunk;
        } catch {
          await reader.cancel().catch(() => {});
          return { ok: false, reason: "bad_frame" };
        }
        if (chunk.error) {
          await reader.cancel().catch(() => {});
          return {
            ok: false,
            reason: `stream_error:${chunk.error.code ?? chunk.error.type}`,
            detail: chunk.error.message,
          };
        }
        if (
          ttftMs < 0 &&
          chunk.choices?.some((c) => (c.text ?? "").length > 0 || (c.finish_reason ?? null))
        ) {
          ttftMs = performance.now() - t0;
        }
        if (chunk.usage) usage = chunk.usage;
      }
    }
    const e2eMs = performance.now() - t0;
    if (!done) return { ok: false, reason: "truncated" };
    if (!usage || typeof usage.completion_tokens !== "number")
      return { ok: false, reason: "no_usage" };
    if (ttftMs < 0) ttftMs = e2eMs;
    const completionTokens = usage.completion_tokens;
    return {
      ok: true,
      ttftMs,
      tpotMs: completionTokens > 1 ? (e2eMs - ttftMs) / (completionTokens - 1) : null,
      e2eMs,
      completionTokens,
      promptTokens: usage.prompt_tokens ?? prompt.length,
      cachedTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    };
  } catch (e) {
    if (signal.aborted) return { ok: false, reason: DRAIN_ABORT };
    const err = e as Error & { cause?: { code?: string; message?: string } };
    const why = err.cause?.code ?? err.cause?.message ?? err.message;
    return { ok: false, reason: `network:${String(why).slice(0, 60)}` };
  }
}
