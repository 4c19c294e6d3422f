/**
 * The lifecycle of request, job and task records as pure functions: how a task's progress report
 * changes its own record, and how it is mirrored onto its job and request. The JobExecutor's
 * record store (durable-objects/records.ts) reads the rows, calls these, and writes the result;
 * it is the only code with SQL on those tables.
 *
 * Rules:
 * - statuses move forward only: queued -> running -> a terminal status; a terminal status is
 *   final (reports are fire-and-forget RPCs and may arrive out of order), and a running record
 *   never goes back to queued (a batch job is re-queued explicitly, `requeued`);
 * - timestamps keep their first value;
 * - a job (and its request) ends with its last task: the colocated one, or the decode task of a
 *   PD job; any task that fails or is cancelled ends it; a prefill task's success only starts it.
 */
import { isTerminal, type RequestStatus, type TaskRole } from "../types/records.ts";

export interface RecordState {
  status: RequestStatus;
  startedAt: number | null;
  firstTokenAt: number | null;
  finishedAt: number | null;
  error: string | null;
}

/** What an instance reports about one of its tasks (fields it does not know are absent). */
export interface TaskProgress {
  status?: RequestStatus;
  startedAt?: number;
  firstTokenAt?: number;
  finishedAt?: number;
  numPromptTokens?: number;
  numCompletionTokens?: number;
  /** Prompt tokens served from the instance's prefix cache. */
  numCachedTokens?: number;
  error?: string;
  /** The task failed because its instance did (hung, lost, unreachable): its job may migrate. */
  instanceFailure?: boolean;
}

const ORDER: Record<RequestStatus, number> = {
  queued: 0,
  running: 1,
  succeeded: 2,
  failed: 2,
  cancelled: 2,
};

/** The status after a report of `reported`: forward moves only, terminal statuses final. */
export function nextStatus(current: RequestStatus, reported: RequestStatus): RequestStatus {
  if (isTerminal(current)) return current;
  return ORDER[reported] >= ORDER[current] ? reported : current;
}

function first(current: number | null, reported: number | undefined): number | null {
  return current ?? reported ?? null;
}

/** `r` moved to `status` by report `p`: first timestamps kept; ending sets finishedAt and error. */
function advance(
  r: RecordState,
  status: RequestStatus,
  p: TaskProgress,
  keepError: boolean,
): RecordState {
  const ended = isTerminal(status) && !isTerminal(r.status);
  return {
    status,
    startedAt: first(r.startedAt, p.startedAt),
    firstTokenAt: first(r.firstTokenAt, p.firstTokenAt),
    finishedAt: ended ? (p.finishedAt ?? r.finishedAt) : r.finishedAt,
    error: r.error ?? (ended && keepError ? (p.error ?? null) : null),
  };
}

/** A task's own record after its instance reported `p`. */
export function applyToTask(t: RecordState, p: TaskProgress): RecordState {
  return advance(t, p.status ? nextStatus(t.status, p.status) : t.status, p, true);
}

/** Whether a report of a `role` task with status `s` ends its job. */
export function endsJob(role: TaskRole, s: RequestStatus | undefined): boolean {
  if (s === undefined || !isTerminal(s)) return false;
  return role !== "prefill" || s !== "succeeded";
}

/**
 * A job's (or request's) record after one of its tasks reported `p`: it starts with its first
 * task, and takes a terminal status only when `endsJob`. The job keeps no task's error text; the
 * request does (`withError`), so the API can say why it failed.
 */
export function applyToParent(
  parent: RecordState,
  role: TaskRole,
  p: TaskProgress,
  withError: boolean,
): RecordState {
  const ends = endsJob(role, p.status);
  const reported = ends ? p.status : p.status === undefined ? undefined : "running";
  return advance(
    parent,
    reported ? nextStatus(parent.status, reported) : parent.status,
    p,
    withError,
  );
}
