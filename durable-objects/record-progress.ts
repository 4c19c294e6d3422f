/**
 * How an instance's report on a task is written to the JobExecutor's tables: the task's row, then
 * its job and request as the pure rules say (status: shared/serving/records.ts; whether and what
 * to mirror: shared/serving/report-effects.ts). RecordStore (records.ts) calls these after its
 * pending writes.
 */
import {
  applyToParent,
  applyToTask,
  type RecordState,
  type TaskProgress,
} from "../shared/serving/records.ts";
import {
  endedRequest,
  type MirrorMode,
  mirrorsToParents,
  taskEnded,
} from "../shared/serving/report-effects.ts";
import type { EndedRequest } from "../shared/serving/serving-metrics.ts";
import type { JobKind, RequestKind, RequestStatus, TaskRole } from "../shared/types/records.ts";
import { stateOf } from "./record-rows.ts";

/** What a task report changed, for the JobExecutor's logs and scheduling state. */
export interface AppliedProgress {
  role: TaskRole;
  model: string;
  instanceId: string;
  status: RequestStatus;
  /** The report moved the task to a terminal status. */
  ended: boolean;
  /** Set when the report ended an interactive request: its kind and times. */
  request: EndedRequest | null;
}

/**
 * Applies a report to its task and, unless the request is a batch one (the BatchRunner keeps its
 * jobs), mirrors it onto the task's job and request as `mirror` says ("force" is the held
 * failure, when the job does not migrate after all), in one transaction. Null for an unknown task.
 */
export function applyTaskProgress(
  storage: DurableObjectStorage,
  taskId: string,
  p: TaskProgress,
  mirror: MirrorMode,
): AppliedProgress | null {
  const sql = storage.sql;
  const t = sql
    .exec(
      "SELECT t.*, r.model AS model, r.kind AS request_kind, r.status AS request_status, r.received_at AS received_at FROM tasks t JOIN requests r ON r.id = t.request_id WHERE t.id = ?",
      taskId,
    )
    .toArray()[0];
  if (!t) return null;
  const role = t.role as TaskRole;
  const before = stateOf(t);
  const after = applyToTask(before, p);
  let request: RecordState | null = null;
  storage.transactionSync(() => {
    sql.exec(
      "UPDATE tasks SET status = ?, started_at = ?, first_token_at = ?, finished_at = ?, error = ?, num_prompt_tokens = COALESCE(?, num_prompt_tokens), num_completion_tokens = COALESCE(?, num_completion_tokens) WHERE id = ?",
      after.status,
      after.startedAt,
      after.firstTokenAt,
      after.finishedAt,
      after.error,
      p.numPromptTokens ?? null,
      p.numCompletionTokens ?? null,
      taskId,
    );
    if (mirrorsToParents(t.request_kind as RequestKind, before.status, mirror)) {
      request = applyToParents(sql, t.job_id as string, t.request_id as string, role, p);
    }
  });
  return {
    role,
    model: t.model as string,
    instanceId: t.instance_id as string,
    status: after.status,
    ended: taskEnded(before, after),
    request: endedRequest(
      {
        kind: t.request_kind as JobKind,
        statusBefore: t.request_status as RequestStatus,
        receivedAt: t.received_at as number,
      },
      request as RecordState | null,
    ),
  };
}

/** Mirrors a task's report onto its job and request; the request's state after it (or null). */
export function applyToParents(
  sql: SqlStorage,
  jobId: string,
  requestId: string,
  role: TaskRole,
  p: TaskProgress,
): RecordState | null {
  let request: RecordState | null = null;
  for (const [table, id] of [
    ["jobs", jobId],
    ["requests", requestId],
  ] as const) {
    const row = sql.exec(`SELECT * FROM ${table} WHERE id = ?`, id).toArray()[0];
    if (!row) continue;
    const s = applyToParent(stateOf(row), role, p, table === "requests");
    if (table === "requests") request = s;
    sql.exec(
      `UPDATE ${table} SET status = ?, started_at = ?, first_token_at = ?, finished_at = ?${table === "requests" ? ", error = ?" : ""} WHERE id = ?`,
      s.status,
      s.startedAt,
      s.firstTokenAt,
      s.finishedAt,
      ...(table === "requests" ? [s.error] : []),
      id,
    );
  }
  return request;
}
