/**
 * RPC messages between the frontend worker, the JobExecutor and Npu DOs, and the event stream an
 * Npu sends back while it generates. Plain data; typed, versioned, not zod-validated (internal).
 */
import type { KvUsage } from "../engine/kv-policy/sequence-kv.ts";
import type { KvCacheRequest, KvCacheSpec } from "../engine/kv-policy/spec.ts";
import type { ErrorInfo } from "../errors.ts";
import type { RegionRef } from "../fabric/regions.ts";
import type { SampledToken } from "../model/sampler.ts";
import type { JobKind } from "../types/records.ts";

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

/** A choice a continuation carries on (request migration, shared/serving/migration.ts). */
export interface ContinuedChoice {
  /** Its index in the original request (the sampling key's choice). */
  index: number;
  /** Its tokens the client has received: its prompt ends with them, its max tokens lose them. */
  numDelivered: number;
}

/**
 * What a job asks for, before tokenisation: the worker sends it to the JobExecutor, which renders
 * and tokenises it once, checks the context, places the job and records it.
 */
export interface JobSpec {
  requestId: string;
  jobId: string;
  tenant: string;
  model: string;
  input: GenerateInput;
  /** Choices per prompt. */
  n: number;
  /** null: the API default (16 for completions, the rest of the context for chat). */
  maxTokens: number | null;
  sampling: GenerateSampling;
  /** The client's `cache_salt` (the tenant always separates caches). */
  cacheSalt: string | null;
  /** The client's `kv_cache` fields (absent or null: the deployment's default). */
  kvCache?: KvCacheRequest | null;
  /**
   * A continuation of a migrating job: prompt p (the original prompt of a choice plus its
   * delivered tokens) continues choice `continues[p]`; n is 1, maxTokens the original's.
   */
  continues?: ContinuedChoice[];
}

/**
 * One task as an instance runs it (vLLM's NewRequestData): prompts already tokenised by the
 * JobExecutor, limits resolved. The Npu never tokenises a prompt.
 */
export interface GenerateTask {
  protocolVersion: number;
  requestId: string;
  jobId: string;
  taskId: string;
  tenant: string;
  model: string;
  /** Token ids of each prompt, exactly as the engine runs them (BOS included). */
  prompts: number[][];
  /** Choices per prompt. */
  n: number;
  /** Tokens each choice may generate (resolved; prompt + maxTokens fit the context). */
  maxTokens: number;
  /** Output tokens the JobExecutor expects (its predictor); used only for load reports. */
  expectedOutputTokens: number;
  /** Chat answers drop the leading space of their first piece; completions keep it. */
  stripLeadingSpace: boolean;
  sampling: GenerateSampling;
  /** Root of the prompts' prefix-cache keys (tenant and cache_salt): no sharing across roots. */
  cacheSalt: string;
  /**
   * The resolved, checked KV-cache policy of every sequence (absent or null: dense). Under PD
   * only the decode side applies it, after the import.
   */
  kvCache?: KvCacheSpec | null;
  /** A continuation (as JobSpec.continues): prompt p runs as choice `continues[p].index`. */
  continues?: ContinuedChoice[];
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
      /** The KV-cache policy's report (sparse policies only; n > 1: summed, peaks the max). */
      kvCache?: KvUsage;
    }
  | { type: "error"; error: ErrorInfo };

/** Where a PD decode task finds its prompt: the prefill side's first token and KV region. */
export interface Prefilled {
  first: SampledToken;
  region: RegionRef;
  /** Prompt tokens the prefill side took from its prefix cache (the request's cached_tokens). */
  numCachedTokens: number;
}

export interface TaskPlacement {
  taskId: string;
  instanceId: string;
  /** The Npu DO's name (`npuName`). */
  npu: string;
}

export type Placement =
  | { mode: "colocated"; deploymentId: string; colocated: TaskPlacement }
  | { mode: "pd"; deploymentId: string; prefill: TaskPlacement; decode: TaskPlacement }
  /** The task goes to the instance's attention rank 0, which balances it over the ranks. */
  | { mode: "moe-attention"; deploymentId: string; attention: TaskPlacement };

/** The task of a placement whose stream the client reads (the last one of the job). */
export function streamingTask(p: Placement): TaskPlacement {
  return p.mode === "colocated" ? p.colocated : p.mode === "pd" ? p.decode : p.attention;
}

/**
 * The worker's request to the JobExecutor: admit (model, pin, context cache), plan, record and
 * place a job. The JobExecutor keeps the model records it serves (pushed by the ClusterManager).
 */
export interface SubmitJob {
  spec: JobSpec;
  kind: JobKind;
  clientRequestId: string | null;
  receivedAt: number;
  /** The `deployment` pin, if any. */
  deployment: string | null;
  /** The `context_cache` id to continue, if any. */
  contextCache: string | null;
}

/** A planned job: where its tasks go, what they run (each task adds its id), and the weights. */
export interface Submitted {
  placement: Placement;
  task: Omit<GenerateTask, "taskId">;
  /** The model's GGUF in the registry (what an Npu loads). */
  r2Key: string;
}

/** A choice not finished when its attempt failed, with the tokens the client has of it. */
export interface DeliveredChoice {
  index: number;
  tokenIds: number[];
}

/**
 * The worker's request to continue a job whose instance failed under it (see
 * shared/serving/migration.ts): the job as first planned, the failed attempt's task, and the
 * choices not finished with the tokens the client has already received of each.
 */
export interface ResumeJob {
  spec: JobSpec;
  /** The first attempt's task (its prompt ids and resolved max tokens). */
  task: Omit<GenerateTask, "taskId">;
  /** A task of the failed attempt. */
  failedTaskId: string;
  deploymentId: string;
  choices: DeliveredChoice[];
  /** Why the attempt failed (the stream's error message). */
  error: string;
}
