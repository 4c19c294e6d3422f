/**
 * `toGenerateFields`: a validated OpenAI request body (schemas.ts) -> the `GenerateInput` /
 * `GenerateSampling` fields of a `GenerateTask`. No routing, no I/O.
 */
import type { KvCacheRequest } from "../../shared/engine/kv-policy/spec.ts";
import type {
  ChatMessage,
  ChatRole,
  GenerateInput,
  GenerateSampling,
} from "../../shared/protocol/messages.ts";
import { toKvCacheRequest } from "./schema-fields.ts";
import type { ChatCompletionBody, CompletionBody } from "./schemas.ts";

export interface GenerateFields {
  input: GenerateInput;
  /** Choices per prompt. */
  n: number;
  /** null: the API default (decided by the caller). */
  maxTokens: number | null;
  sampling: GenerateSampling;
  stream: boolean;
  /** stream_options.include_usage, only when streaming. */
  includeUsage: boolean;
  /** The client's `cache_salt` (null: none); the request path roots it with `cacheSaltFor`. */
  cacheSalt: string | null;
  /** The client's `kv_cache` (null: the deployment's default). */
  kvCache: KvCacheRequest | null;
}

function contentText(content: ChatCompletionBody["messages"][number]["content"]): string {
  if (content == null) return "";
  if (typeof content === "string") return content;
  return content.map((p) => p.text).join("");
}

function normaliseStop(stop: string | string[] | null | undefined): string[] {
  if (stop == null) return [];
  return (typeof stop === "string" ? [stop] : stop).filter((s) => s.length > 0);
}

function toPrompts(prompt: CompletionBody["prompt"]): (string | number[])[] {
  if (typeof prompt === "string") return [prompt];
  if (prompt.length > 0 && typeof prompt[0] === "number") return [prompt as number[]];
  return prompt as (string | number[])[];
}

/** Validated body -> the generation fields of a GenerateTask (`drawSeed` when none was sent). */
export function toGenerateFields(
  body: ChatCompletionBody,
  kind: "chat",
  drawSeed: () => number,
): GenerateFields;
export function toGenerateFields(
  body: CompletionBody,
  kind: "completion",
  drawSeed: () => number,
): GenerateFields;
export function toGenerateFields(
  body: ChatCompletionBody | CompletionBody,
  kind: "chat" | "completion",
  drawSeed: () => number,
): GenerateFields;
export function toGenerateFields(
  body: ChatCompletionBody | CompletionBody,
  kind: "chat" | "completion",
  drawSeed: () => number,
): GenerateFields {
  let input: GenerateInput;
  let logprobs: boolean;
  let topLogprobs: number;
  if (kind === "chat") {
    const chat = body as ChatCompletionBody;
    const messages: ChatMessage[] = chat.messages.map((m) => ({
      role: m.role as ChatRole,
      content: contentText(m.content),
    }));
    input = { kind: "chat", messages };
    logprobs = chat.logprobs === true;
    topLogprobs = logprobs ? (chat.top_logprobs ?? 0) : 0;
  } else {
    const completion = body as CompletionBody;
    input = { kind: "completion", prompts: toPrompts(completion.prompt) };
    logprobs = completion.logprobs != null;
    topLogprobs = completion.logprobs ?? 0;
  }
  const stream = body.stream === true;
  return {
    input,
    n: body.n ?? 1,
    maxTokens: body.max_completion_tokens ?? body.max_tokens ?? null,
    sampling: {
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      topK: body.top_k == null || body.top_k < 0 ? 0 : body.top_k,
      seed: body.seed ?? drawSeed(),
      stop: normaliseStop(body.stop),
      ignoreEos: body.ignore_eos === true,
      logprobs,
      topLogprobs,
    },
    stream,
    includeUsage: stream && body.stream_options?.include_usage === true,
    cacheSalt: body.cache_salt ?? null,
    kvCache: toKvCacheRequest(body.kv_cache),
  };
}
