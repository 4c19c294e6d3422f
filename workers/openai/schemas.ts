/**
 * OpenAI-compatible request bodies for `POST /v1/chat/completions` and `POST /v1/completions`:
 * zod schemas (what OpenAI and its official SDKs send; unknown fields are stripped, unsupported
 * features are 400s with OpenAI-style messages), built on the shared fields of schema-fields.ts.
 * Raw bodies are parsed against them by parse-body.ts; generate-fields.ts maps a parsed body onto
 * a `GenerateTask`'s fields. No routing, no I/O.
 */
import { z } from "zod";
import { commonFields, noToolChoiceField, noToolsField, unsupported } from "./schema-fields.ts";

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
