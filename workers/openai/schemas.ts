/**
 * OpenAI-compatible request bodies for `POST /v1/chat/completions` and `POST /v1/completions`:
 * zod schemas (what OpenAI and its official SDKs send; unknown fields are stripped, unsupported
 * features are 400s with OpenAI-style messages) and `toGenerateFields` (body -> the
 * `GenerateInput` / `GenerateSampling` fields of a `GenerateTask`). Raw bodies are parsed against
 * them by parse-body.ts. No routing, no I/O.
 */
import { z } from "zod";
import { KV_POLICIES, type KvCacheRequest } from "../../shared/engine/kv-policy/spec.ts";
import type {
  ChatMessage,
  ChatRole,
  GenerateInput,
  GenerateSampling,
} from "../../shared/protocol/messages.ts";

// ---------------------------------------------------------------------------------------------
// Building blocks

/** A refinement that rejects a feature this server does not implement. */
function unsupported(message: string, code = "unsupported_value") {
  return { message, params: { code } };
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === "object") return Object.keys(v).length === 0;
  return false;
}

/** `tools`, `functions`: absent, null or [] only. */
function noToolsField(name: string) {
  return z
    .array(z.unknown())
    .nullish()
    .refine(
      (v) => isEmpty(v),
      unsupported(
        `'${name}' is not supported by this server (no tool or function calling).`,
        "unsupported_parameter",
      ),
    );
}

/** `tool_choice`, `function_call`: absent, null, "none" or "auto" (= none without tools). */
function noToolChoiceField(name: string) {
  return z
    .unknown()
    .refine(
      (v) => v === null || v === "none" || v === "auto",
      unsupported(
        `'${name}' is not supported by this server (no tool or function calling); ` +
          "only 'none' or 'auto' are accepted.",
      ),
    )
    .optional();
}

/** presence_penalty, frequency_penalty: in OpenAI's range, but only 0 is implemented. */
function zeroPenalty(name: string) {
  return z
    .number()
    .min(-2)
    .max(2)
    .nullish()
    .refine(
      (v) => !v,
      unsupported(
        `'${name}' is not supported by this server; only 0 (or omitting it) is accepted.`,
      ),
    );
}

const Stop = z
  .union([z.string(), z.array(z.string()).max(4)], {
    error: "expected a string or an array of up to 4 strings",
  })
  .nullish();

const StreamOptions = z.object({ include_usage: z.boolean().nullish() }).nullish();

export const MAX_CACHE_SALT_LENGTH = 256;

/**
 * Extension: `kv_cache`, the KV-cache policy of every sequence of the request (README "KV-cache
 * policies"); fields left out come from the deployment's default, then the defaults.
 */
export const KvCacheSchema = z.object({
  policy: z.enum(KV_POLICIES).optional(),
  budget: z.int().min(1).optional(),
  page_size: z.int().min(1).optional(),
  sinks: z.int().min(0).optional(),
  recent_share: z.number().gt(0).max(1).optional(),
  refresh_share: z.number().gt(0).max(1).optional(),
});

/** The schema's snake_case fields as the engine names them. */
export function toKvCacheRequest(
  v: z.infer<typeof KvCacheSchema> | null | undefined,
): KvCacheRequest | null {
  if (v == null) return null;
  const out: KvCacheRequest = {};
  if (v.policy !== undefined) out.policy = v.policy;
  if (v.budget !== undefined) out.budget = v.budget;
  if (v.page_size !== undefined) out.pageSize = v.page_size;
  if (v.sinks !== undefined) out.sinks = v.sinks;
  if (v.recent_share !== undefined) out.recentShare = v.recent_share;
  if (v.refresh_share !== undefined) out.refreshShare = v.refresh_share;
  return out;
}

/** Fields shared by both endpoints (OpenAI's plus the extensions marked as such). */
const commonFields = {
  model: z.string(),
  max_tokens: z.int().min(1).nullish(),
  max_completion_tokens: z.int().min(1).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** Extension (vLLM): 0 disables, -1 means the same. */
  top_k: z.int().min(-1).nullish(),
  seed: z.int().nullish(),
  stop: Stop,
  n: z.int().min(1).max(8).nullish(),
  stream: z.boolean().nullish(),
  stream_options: StreamOptions,
  user: z.string().nullish(),
  /** Extension: keep generating past the end-of-sequence token. */
  ignore_eos: z.boolean().nullish(),
  /** Extension: pin a named deployment of the model (reserved). */
  deployment: z.string().nullish(),
  /** Extension: continue an explicit context cache (POST /api/context-caches) by id. */
  context_cache: z.string().nullish(),
  /**
   * Extension (vLLM): share prefix-cached KV blocks only with requests that send the same salt
   * (always within the tenant).
   */
  cache_salt: z
    .string()
    .nullish()
    .refine((v) => v == null || (v.length >= 1 && v.length <= MAX_CACHE_SALT_LENGTH), {
      message: `'cache_salt' must be a string of 1 to ${MAX_CACHE_SALT_LENGTH} characters.`,
      params: { code: "invalid_value" },
    }),
  kv_cache: KvCacheSchema.nullish(),
  presence_penalty: zeroPenalty("presence_penalty"),
  frequency_penalty: zeroPenalty("frequency_penalty"),
  logit_bias: z
    .record(z.string(), z.number())
    .nullish()
    .refine(
      (v) => isEmpty(v),
      unsupported("'logit_bias' is not supported by this server; send {} or omit it."),
    ),
};

// ---------------------------------------------------------------------------------------------
// Chat completions

export const CHAT_ROLES = ["system", "developer", "user", "assistant", "tool"] as const;

const TextPart = z.object({
  type: z.string().refine((t) => t === "text", {
    error: (iss) =>
      `Content part type '${String(iss.input)}' is not supported; only 'text' parts are supported.`,
    params: { code: "unsupported_value" },
  }),
  text: z.string(),
});

const MessageContent = z.union([z.string(), z.array(TextPart)], {
  error: "expected a string or an array of text content parts",
});

const ChatMessageSchema = z
  .object({
    role: z.enum(CHAT_ROLES),
    content: MessageContent.nullish(),
    name: z.string().nullish(),
  })
  .superRefine((m, ctx) => {
    if (m.content == null && m.role !== "assistant") {
      ctx.addIssue({
        code: "custom",
        path: ["content"],
        message: `Missing content in a '${m.role}' message: only 'assistant' messages may omit it.`,
        params: { code: "missing_required_parameter" },
      });
    }
  });

const ResponseFormat = z
  .object({ type: z.string() })
  .nullish()
  .refine((v) => v == null || v.type === "text", {
    error: (iss) =>
      `response_format type '${(iss.input as { type: string }).type}' is not supported by ` +
      `this server; only {"type": "text"} is.`,
    params: { code: "unsupported_value" },
  });

export const ChatCompletionSchema = z
  .object({
    ...commonFields,
    messages: z.array(ChatMessageSchema).min(1),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.int().min(0).max(20).nullish(),
    response_format: ResponseFormat,
    tools: noToolsField("tools"),
    functions: noToolsField("functions"),
    tool_choice: noToolChoiceField("tool_choice"),
    function_call: noToolChoiceField("function_call"),
    parallel_tool_calls: z.boolean().nullish(),
  })
  .superRefine((b, ctx) => {
    if (b.top_logprobs && b.logprobs !== true) {
      ctx.addIssue({
        code: "custom",
        path: ["top_logprobs"],
        message: "'top_logprobs' requires 'logprobs' to be true.",
        params: { code: "invalid_value" },
      });
    }
  });

export type ChatCompletionBody = z.infer<typeof ChatCompletionSchema>;

// ---------------------------------------------------------------------------------------------
// Completions

const TokenIds = z.array(z.int().min(0));

const Prompt = z
  .union([z.string(), z.array(z.string()), TokenIds, z.array(TokenIds.min(1))], {
    error:
      "expected a string, an array of strings, an array of token ids, or an array of token-id arrays",
  })
  .refine((p) => !(Array.isArray(p) && p.length === 0), {
    message: "Invalid 'prompt': empty array. Expected at least one prompt or token.",
    params: { code: "empty_array" },
  });

export const CompletionSchema = z
  .object({
    ...commonFields,
    prompt: Prompt,
    /** 0..5: how many top alternatives to return per token (0: just the sampled token). */
    logprobs: z.int().min(0).max(5).nullish(),
    echo: z
      .boolean()
      .nullish()
      .refine((v) => !v, unsupported("'echo' is not supported by this server; send false.")),
    suffix: z
      .string()
      .nullish()
      .refine((v) => !v, unsupported("'suffix' is not supported by this server.")),
    best_of: z.int().min(1).max(8).nullish(),
  })
  .superRefine((b, ctx) => {
    if (b.best_of != null && b.best_of !== (b.n ?? 1)) {
      ctx.addIssue({
        code: "custom",
        path: ["best_of"],
        message: "'best_of' is not supported by this server; omit it or set it equal to 'n'.",
        params: { code: "unsupported_value" },
      });
    }
  });

export type CompletionBody = z.infer<typeof CompletionSchema>;

// ---------------------------------------------------------------------------------------------
// Mapping to the generation task

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
