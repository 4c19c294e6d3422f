/**
 * The batch queue in the JobExecutor's SQLite storage (`batch_jobs`, one row per batch item):
 * the table and every statement on it. A row's `state` is its place in the queue (`queued`,
 * `dispatched`, `done`), not its API status, which records.ts keeps; `attempts` counts its runs.
 */
import type { BatchJobRow, BatchJobSpec, BatchJobState } from "../shared/serving/batch.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS batch_jobs (
  job_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL, result TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS batch_jobs_by_state ON batch_jobs(state);
CREATE INDEX IF NOT EXISTS batch_jobs_by_request ON batch_jobs(request_id, idx);`;

/** A dispatched row, as restart recovery reads it. */
export interface DispatchedJob {
  jobId: string;
  requestId: string;
  attempts: number;
  /** Its result or error was stored already. */
  stored: boolean;
}

export class BatchQueue {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(SCHEMA);
  }

  /** Queues a batch request's items, in order. */
  enqueue(requestId: string, jobs: readonly BatchJobSpec[]): void {
    jobs.forEach((j, idx) => {
      this.sql.exec(
        "INSERT INTO batch_jobs (job_id, request_id, idx, state, spec) VALUES (?, ?, ?, 'queued', ?)",
        j.jobId,
        requestId,
        idx,
        JSON.stringify(j),
      );
    });
  }

  /** The item a job runs and its request, or null. */
  job(jobId: string): { spec: BatchJobSpec; requestId: string } | null {
    const row = this.sql
      .exec("SELECT spec, request_id FROM batch_jobs WHERE job_id = ?", jobId)
      .toArray()[0];
    if (!row) return null;
    return {
      spec: JSON.parse(row.spec as string) as BatchJobSpec,
      requestId: row.request_id as string,
    };
  }

  /** The oldest `limit` queued jobs. */
  queued(limit: number): string[] {
    if (limit === 0) return [];
    return this.sql
      .exec("SELECT job_id FROM batch_jobs WHERE state = 'queued' ORDER BY rowid LIMIT ?", limit)
      .toArray()
      .map((r) => r.job_id as string);
  }

  /** Whether any job is not done. */
  hasPending(): boolean {
    return (
      this.sql.exec("SELECT 1 FROM batch_jobs WHERE state != 'done' LIMIT 1").toArray().length > 0
    );
  }

  dispatched(): DispatchedJob[] {
    return this.sql
      .exec(
        "SELECT job_id, request_id, attempts, (result IS NOT NULL OR error IS NOT NULL) AS stored FROM batch_jobs WHERE state = 'dispatched'",
      )
      .toArray()
      .map((r) => ({
        jobId: r.job_id as string,
        requestId: r.request_id as string,
        attempts: r.attempts as number,
        stored: (r.stored as number) !== 0,
      }));
  }

  attempts(jobId: string): number {
    const row = this.sql
      .exec("SELECT attempts FROM batch_jobs WHERE job_id = ?", jobId)
      .toArray()[0];
    return (row?.attempts as number | undefined) ?? 0;
  }

  /** Starts a run: dispatched, one more attempt. */
  markDispatched(jobId: string): void {
    this.sql.exec(
      "UPDATE batch_jobs SET state = 'dispatched', attempts = attempts + 1 WHERE job_id = ?",
      jobId,
    );
  }

  setState(jobId: string, state: BatchJobState): void {
    this.sql.exec("UPDATE batch_jobs SET state = ? WHERE job_id = ?", state, jobId);
  }

  /** A dispatched job back in the queue; `refund` takes its attempt back (a full instance). */
  requeue(jobId: string, refund: boolean): void {
    this.sql.exec(
      "UPDATE batch_jobs SET state = 'queued', attempts = attempts - ? WHERE job_id = ? AND state = 'dispatched'",
      refund ? 1 : 0,
      jobId,
    );
  }

  /** A cancelled request's jobs that never started leave the queue. */
  dropQueued(requestId: string): void {
    this.sql.exec(
      "UPDATE batch_jobs SET state = 'done' WHERE request_id = ? AND state = 'queued'",
      requestId,
    );
  }

  /** Stores a job's outcome: its response body's JSON or its error's. */
  store(jobId: string, resultJson: string | null, errorJson: string | null): void {
    this.sql.exec(
      "UPDATE batch_jobs SET result = ?, error = ? WHERE job_id = ?",
      resultJson,
      errorJson,
      jobId,
    );
  }

  /** A request's rows in item order, for its record. */
  rows(requestId: string): BatchJobRow[] {
    return this.sql
      .exec(
        "SELECT job_id, idx, result, error FROM batch_jobs WHERE request_id = ? ORDER BY idx",
        requestId,
      )
      .toArray()
      .map((row) => ({
        jobId: row.job_id as string,
        index: row.idx as number,
        result: typeof row.result === "string" ? row.result : null,
        error: typeof row.error === "string" ? row.error : null,
      }));
  }
}
