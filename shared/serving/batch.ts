/**
 * The rules of DeepFlow's batch-inference requests, as pure functions over plain data; the
 * JobExecutor's BatchRunner (durable-objects/batch-runner.ts) keeps the queue in SQLite and
 * drives them. This module owns:
 * - the batch item and submission shapes, and a job's response metadata;
 * - the queue: how many jobs may start now (BATCH_CONCURRENCY in flight, oldest first — the
 *   order is the store's), the capacity back-off after a 429, and when the watchdog alarm fires;
 * - restart recovery: a `dispatched` job no longer in flight was cut off; it is queued again
 *   until MAX_ATTEMPTS runs, then failed with `job_interrupted`;
 * - outcomes: the result size limit, a request's status once no job is left (succeeded when any
 *   job succeeded, failed when all failed), job counts, the request record's job views, and the
 *   errors a batch job or a cancel answers with.
 *
 * A job's state in the queue is `queued` (waiting), `dispatched` (started by some isolate) or
 * `done` (finished, cancelled or skipped); its API status is kept separately (RequestStatus).
 */

import type { KvCacheRequest } from "../engine/kv-policy/spec.ts";
import { type ErrorInfo, errorEnvelope, errorInfo } from "../errors.ts";
import type { GenerateEvent, GenerateInput, GenerateSampling } from "../protocol/messages.ts";
import {
  type BatchJobError,
  isTerminal,
  type JobCounts,
  type JobKind,
  type JobRecord,
  type JobStatus,
  type RequestRecord,
  type RequestStatus,
} from "../types/records.ts";
import { numSeqsOf } from "./admission.ts";
import type { ResponseMeta } from "./openai-response.ts";

/** Batch jobs in flight per JobExecutor (across all its batch requests). */
export const BATCH_CONCURRENCY = 4;
/** While batch work remains, the alarm fires at least this often (restart recovery). */
export const WATCHDOG_MS = 30_000;
/** After an instance answered 429, new batch jobs wait this long. */
export const CAPACITY_BACKOFF_MS = 1_000;
/** A job interrupted by this many JE restarts is failed instead of run again. */
export const MAX_ATTEMPTS = 3;
/** Largest stored result (JSON bytes); a bigger body is replaced by a `result_too_large` error. */
export const MAX_RESULT_BYTES = 256 * 1024;

/** A job's state in the batch queue (not its API status). */
export type BatchJobState = "queued" | "dispatched" | "done";

/** One item of a batch: what its job generates. */
export interface BatchJobSpec {
  jobId: string;
  kind: "chat" | "completion";
  input: GenerateInput;
  /** Choices per prompt. */
  n: number;
  maxTokens: number | null;
  sampling: GenerateSampling;
  /** The item's `cache_salt`, if any. */
  cacheSalt?: string | null;
  /** The item's `kv_cache`, if any. */
  kvCache?: KvCacheRequest | null;
}

export interface BatchSubmit {
  requestId: string;
  tenant: string;
  model: string;
  clientRequestId: string | null;
  receivedAt: number;
  jobs: BatchJobSpec[];
}

// --- a job's messages

/** The job kind recorded for a batch item. */
export function jobKind(kind: BatchJobSpec["kind"]): JobKind {
  return kind === "chat" ? "chat.completion" : "text_completion";
}

/** The metadata of the job's OpenAI response body; `uid` makes its id unique. */
export function responseMeta(
  model: string,
  spec: BatchJobSpec,
  uid: string,
  startedAt: number,
): ResponseMeta {
  return {
    id: `${spec.kind === "chat" ? "chatcmpl" : "cmpl"}-${uid}`,
    created: Math.floor(startedAt / 1000),
    model,
    kind: spec.kind,
    numChoices: numSeqsOf(spec.input, spec.n),
    logprobs: spec.sampling.logprobs,
  };
}

/** Passes the events on, calling `onFirst` at the first generated text. */
export async function* tapFirstToken(
  events: AsyncIterable<GenerateEvent>,
  onFirst: () => void,
): AsyncGenerator<GenerateEvent> {
  let first = true;
  for await (const e of events) {
    if (first && e.type === "delta") {
      first = false;
      onFirst();
    }
    yield e;
  }
}

// --- the queue

/** How many queued jobs may start now (the oldest first): none while paused after a 429. */
export function dispatchSlots(s: { inFlight: number; now: number; pausedUntil: number }): number {
  if (s.now < s.pausedUntil) return 0;
  return Math.max(0, BATCH_CONCURRENCY - s.inFlight);
}

/** Until when new jobs wait after an instance had no room. */
export function capacityPause(now: number): number {
  return now + CAPACITY_BACKOFF_MS;
}

/**
 * What becomes of a job whose placement or Npu failed: a full queue (429) sends it back to the
 * queue without using up an attempt, and pauses new jobs; an instance that was unreachable or
 * spoke another protocol version (a restart, a rollout) sends it back as one more attempt, until
 * MAX_ATTEMPTS; anything else fails it.
 */
export function retryOf(error: ErrorInfo, attempts: number): "pause" | "retry" | "fail" {
  if (error.kind === "capacity") return "pause";
  const transient = error.code === "instance_unavailable" || error.code === "protocol_mismatch";
  return transient && attempts < MAX_ATTEMPTS ? "retry" : "fail";
}

/**
 * When the watchdog alarm should fire, or null when no batch work remains: at the end of a
 * capacity pause, else WATCHDOG_MS from now.
 */
export function watchdogAt(s: {
  pending: boolean;
  inFlight: number;
  now: number;
  pausedUntil: number;
}): number | null {
  if (!s.pending && s.inFlight === 0) return null;
  return s.pausedUntil > s.now ? s.pausedUntil : s.now + WATCHDOG_MS;
}

/** Whether to (re)set the alarm to `at`: none is set, or the one set fires later. */
export function shouldSetAlarm(current: number | null, at: number): boolean {
  return current === null || current > at;
}

// --- restart recovery

/** `dispatched` jobs this isolate is not running: a restart cut them off. */
export function interruptedJobs<T extends { jobId: string }>(
  dispatched: readonly T[],
  inFlight: ReadonlySet<string>,
): T[] {
  return dispatched.filter((j) => !inFlight.has(j.jobId));
}

/**
 * What becomes of an interrupted job: failed once it has been started MAX_ATTEMPTS times, else
 * queued again (or done, when its outcome was already stored).
 */
export function recoverJob(j: {
  attempts: number;
  stored: boolean;
}): { action: "fail"; error: ErrorInfo } | { action: "requeue"; state: BatchJobState } {
  if (j.attempts >= MAX_ATTEMPTS) {
    const msg = `The job was interrupted ${MAX_ATTEMPTS} times by restarts of its executor.`;
    return { action: "fail", error: errorInfo("internal", msg, null, "job_interrupted") };
  }
  return { action: "requeue", state: j.stored ? "done" : "queued" };
}

// --- outcomes

/** The body to store as the job's result, or `result_too_large` above MAX_RESULT_BYTES. */
export function storedResult(
  body: object,
): { ok: true; json: string } | { ok: false; error: ErrorInfo } {
  const json = JSON.stringify(body);
  if (new TextEncoder().encode(json).byteLength > MAX_RESULT_BYTES) {
    const msg = `The job's response is larger than the ${MAX_RESULT_BYTES} bytes a batch job stores.`;
    return { ok: false, error: errorInfo("invalid_request", msg, null, "result_too_large") };
  }
  return { ok: true, json };
}

/** A failed job's stored error: the OpenAI error envelope's `error`. */
export function storedError(error: ErrorInfo): BatchJobError {
  return errorEnvelope(error).error;
}

/** Job counts from how many jobs are in each status. */
export function jobCounts(groups: Iterable<{ status: JobStatus; n: number }>): JobCounts {
  const c: JobCounts = { total: 0, queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
  for (const g of groups) {
    c.total += g.n;
    c[g.status] += g.n;
  }
  return c;
}

/**
 * A batch request's end once a job finished: null while any job is queued or running; then
 * succeeded when any job succeeded, failed (with a summary error) when none did.
 */
export function requestOutcome(
  c: JobCounts,
): { status: "succeeded" | "failed"; error: string | null } | null {
  if (c.queued + c.running > 0) return null;
  if (c.succeeded > 0) return { status: "succeeded", error: null };
  return { status: "failed", error: "every job of the batch failed; see each job's error" };
}

/** A batch job's stored row, as the request record shows it. */
export interface BatchJobRow {
  jobId: string;
  index: number;
  /** JSON of the response body, or null. */
  result: string | null;
  /** JSON of the stored error, or null. */
  error: string | null;
}

/**
 * A batch request's record with each job's index, result or error (in item order) and the job
 * counts; rows without a job record are left out.
 */
export function decorateBatch(rec: RequestRecord, rows: readonly BatchJobRow[]): RequestRecord {
  const byId = new Map(rec.jobs.map((j) => [j.id, j]));
  const jobs: JobRecord[] = [...rows]
    .sort((a, b) => a.index - b.index)
    .flatMap((row) => {
      const j = byId.get(row.jobId);
      if (!j) return [];
      const result = row.result === null ? null : (JSON.parse(row.result) as object);
      const error = row.error === null ? null : (JSON.parse(row.error) as BatchJobError);
      return [{ ...j, index: row.index, result, error }];
    });
  return { ...rec, jobs, jobCounts: jobCounts(jobs.map((j) => ({ status: j.status, n: 1 }))) };
}

// --- errors

/** Why a request cannot be cancelled (`status` null: there is no such request), or null. */
export function cancelRefusal(requestId: string, status: RequestStatus | null): ErrorInfo | null {
  if (status === null) {
    const msg = `No request with id ${requestId}.`;
    return errorInfo("not_found", msg, "id", "request_not_found");
  }
  if (isTerminal(status)) {
    const msg = `Request ${requestId} has already finished (${status}); it cannot be cancelled.`;
    return errorInfo("conflict", msg, "id", "request_already_finished");
  }
  return null;
}
