/**
 * Rows of the JobExecutor's request/job/task tables as the records the API shows, and as the
 * state the pure status rules (shared/serving/records.ts) work on. No SQL: records.ts and
 * record-queries.ts read the rows.
 */
import type { RecordState } from "../shared/serving/records.ts";
import type {
  JobKind,
  JobRecord,
  JobStatus,
  RequestKind,
  RequestRecord,
  RequestStatus,
  TaskRecord,
  TaskRole,
} from "../shared/types/records.ts";

export type Row = Record<string, SqlStorageValue>;

function num(v: SqlStorageValue | undefined): number | null {
  return v === null || v === undefined ? null : Number(v);
}

export function stateOf(r: Row): RecordState {
  return {
    status: r.status as RequestStatus,
    startedAt: num(r.started_at),
    firstTokenAt: num(r.first_token_at),
    finishedAt: num(r.finished_at),
    error: (r.error as string | null | undefined) ?? null,
  };
}

function times(r: Row) {
  return {
    queuedAt: num(r.queued_at),
    startedAt: num(r.started_at),
    firstTokenAt: num(r.first_token_at),
    finishedAt: num(r.finished_at),
  };
}

function toTask(t: Row): TaskRecord {
  return {
    id: t.id as string,
    jobId: t.job_id as string,
    role: t.role as TaskRole,
    status: t.status as RequestStatus,
    instanceId: t.instance_id as string,
    npu: t.npu as string,
    numPromptTokens: num(t.num_prompt_tokens),
    numCompletionTokens: num(t.num_completion_tokens),
    error: (t.error as string | null) ?? null,
    coldStartMs: num(t.cold_start_ms),
    ...times(t),
  };
}

/** A request row with its job and task rows as the API's record. */
export function toRequest(r: Row, jobs: Row[], tasks: Row[]): RequestRecord {
  const requestId = r.id as string;
  return {
    id: requestId,
    object: "request",
    tenant: r.tenant as string,
    model: r.model as string,
    kind: r.kind as RequestKind,
    status: r.status as RequestStatus,
    clientRequestId: (r.client_request_id as string | null) ?? null,
    error: (r.error as string | null) ?? null,
    receivedAt: r.received_at as number,
    ...times(r),
    jobs: jobs.map(
      (j): JobRecord => ({
        id: j.id as string,
        requestId,
        kind: j.kind as JobKind,
        status: j.status as JobStatus,
        ...times(j),
        tasks: tasks.filter((t) => t.job_id === j.id).map(toTask),
      }),
    ),
  };
}
