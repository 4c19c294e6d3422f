/**
 * DeepFlow's request -> job -> task records as the API shows them. Plain types only.
 * Timestamps are epoch milliseconds (`*At`), null until the event happens.
 */

import type { GenerateInput } from "../protocol/messages.ts";

export type RequestStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export type JobStatus = RequestStatus;
export type TaskStatus = RequestStatus;
/** What a job generates (OpenAI's object names). */
export type JobKind = "chat.completion" | "text_completion";
/** A request is one job of a kind, or a batch of them. */
export type RequestKind = JobKind | "batch";
export type TaskRole = "colocated" | "prefill" | "decode" | "attention" | "expert";
/** The roles of a deployment's instances (colocated, or PD's prefill and decode). */
export type InstanceRole = Extract<TaskRole, "colocated" | "prefill" | "decode" | "attention">;

export interface Timestamps {
  receivedAt: number;
  queuedAt: number | null;
  startedAt: number | null;
  firstTokenAt: number | null;
  finishedAt: number | null;
}

export interface TaskRecord extends Omit<Timestamps, "receivedAt"> {
  id: string;
  jobId: string;
  role: TaskRole;
  status: TaskStatus;
  instanceId: string;
  npu: string;
  numPromptTokens: number | null;
  numCompletionTokens: number | null;
  error: string | null;
  /** Milliseconds the task waited for its deployment to scale from zero; null when it did not. */
  coldStartMs: number | null;
}

export interface JobRecord extends Omit<Timestamps, "receivedAt"> {
  id: string;
  requestId: string;
  kind: JobKind;
  status: JobStatus;
  tasks: TaskRecord[];
  /** Batch jobs only: the item's position in the batch's `requests` list. */
  index?: number;
  /** Batch jobs only: the OpenAI response body once the job succeeded, else null. */
  result?: object | null;
  /** Batch jobs only: the OpenAI error envelope's `error` once the job failed, else null. */
  error?: BatchJobError | null;
}

export interface BatchJobError {
  message: string;
  type: string;
  param: string | null;
  code: string | null;
}

/** How many of a batch request's jobs are in each status. */
export type JobCounts = Record<JobStatus, number> & { total: number };

export interface RequestRecord extends Timestamps {
  id: string;
  object: "request";
  tenant: string;
  model: string;
  kind: RequestKind;
  status: RequestStatus;
  clientRequestId: string | null;
  error: string | null;
  jobs: JobRecord[];
  /** Batch requests only. */
  jobCounts?: JobCounts;
}

export function isTerminal(s: RequestStatus): boolean {
  return s === "succeeded" || s === "failed" || s === "cancelled";
}

/** An explicit context cache: a prompt prefix whose KV is pinned on one instance. */
export interface ContextCacheRecord {
  id: string;
  object: "context_cache";
  model: string;
  /** The weights generation it was computed with: a re-upload invalidates it. */
  generation: number;
  deploymentId: string;
  instanceId: string;
  /** The cached prefix as sent (prompt or messages); requests that use it continue it. */
  input: GenerateInput;
  numTokens: number;
  /** Tokens held in pinned full KV blocks. */
  numCachedTokens: number;
  createdAt: number;
  expiresAt: number;
}
