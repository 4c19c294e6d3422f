/**
 * RPC messages between the frontend worker, the JobExecutor and Npu DOs, and the event stream an
 * Npu sends back while it generates. Plain data; typed, versioned, not zod-validated (internal).
 */
import type { ErrorInfo } from "../errors.ts";

export type ChatRole = "system" | "developer" | "user" | "assistant" | "tool";

export interface ChatMessage {
  role: ChatRole;
  content: string;
}

/** What to generate from: a chat (rendered through the model's template) or raw prompts. */
export type GenerateInput =
  | { kind: "chat"; messages: ChatMessage[] }
  /** Completions: one or more prompts, each text or token ids; choices are prompt-major. */
  | { kind: "completion"; prompts: (string | number[])[] };

export interface GenerateSampling {
  /** 0 is greedy. */
  temperature: number;
  topP: number;
  /** 0 disables top-k. */
  topK: number;
  /** Always set: the frontend draws one when the client sent none. */
  seed: number;
  stop: string[];
  ignoreEos: boolean;
  logprobs: boolean;
  /** Alternatives per token (0..20). */
  topLogprobs: number;
}

export interface GenerateTask {
  protocolVersion: number;
  requestId: string;
  jobId: string;
  taskId: string;
  tenant: string;
  model: string;
  input: GenerateInput;
  /** Choices per prompt. */
  n: number;
  /** null: the API default (16 for completions, the rest of the context for chat). */
  maxTokens: number | null;
  sampling: GenerateSampling;
}

export interface TokenLogprobInfo {
  token: string;
  logprob: number;
  bytes: number[];
}

export interface TokenLogprobEntry extends TokenLogprobInfo {
  topLogprobs: TokenLogprobInfo[];
}

/** One NDJSON line of an Npu's generation stream. */
export type GenerateEvent =
  | {
      type: "delta";
      /** Choice index (prompt-major: prompt p, choice i -> p * n + i). */
      index: number;
      text: string;
      tokenIds: number[];
      logprobs: TokenLogprobEntry[] | null;
    }
  | { type: "finish"; index: number; finishReason: "stop" | "length"; numOutputTokens: number }
  | {
      type: "usage";
      promptTokens: number;
      completionTokens: number;
      totalTokens: number;
      /** Prompt tokens whose KV came from the prefix cache. */
      cachedTokens?: number;
    }
  | { type: "error"; error: ErrorInfo };
