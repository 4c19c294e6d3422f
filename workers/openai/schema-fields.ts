/**
 * The request fields `POST /v1/chat/completions` and `POST /v1/completions` share (sampling,
 * streaming, the extensions, the `kv_cache` policy) and the refinements both endpoints' zod
 * schemas build on to turn unsupported OpenAI features into 400s with OpenAI-style messages.
 * The endpoint schemas are in schemas.ts. No routing, no I/O.
 */
import { z } from "zod";
import { KV_POLICIES, type KvCacheRequest } from "../../shared/engine/kv-policy/spec.ts";
import { KV_SCORE_AGGREGATES } from "../../shared/model/page-scorer.ts";

/** A refinement that rejects a feature this server does not implement. */
export function unsupported(message: string, code = "unsupported_value") {
  return { message, params: { code } };
}

function isEmpty(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === "object") return Object.keys(v).length === 0;
  return false;
}

/** `tools`, `functions`: absent, null or [] only. */
export function noToolsField(name: string) {
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
export function noToolChoiceField(name: string) {
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
  aggregate: z.enum(KV_SCORE_AGGREGATES).optional(),
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
  if (v.aggregate !== undefined) out.aggregate = v.aggregate;
  return out;
}

/** Fields shared by both endpoints (OpenAI's plus the extensions marked as such). */
export const commonFields = {
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
