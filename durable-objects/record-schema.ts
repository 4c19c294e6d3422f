/**
 * The schema of the JobExecutor's request/job/task tables (records.ts writes them,
 * record-queries.ts reads them), and the migration of tables made by older versions.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL,
  status TEXT NOT NULL, client_request_id TEXT, error TEXT,
  received_at INTEGER NOT NULL, queued_at INTEGER, started_at INTEGER, first_token_at INTEGER,
  finished_at INTEGER);
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY, request_id TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
  queued_at INTEGER, started_at INTEGER, first_token_at INTEGER, finished_at INTEGER);
CREATE TABLE IF NOT EXISTS tasks (
  id TEXT PRIMARY KEY, job_id TEXT NOT NULL, request_id TEXT NOT NULL, role TEXT NOT NULL,
  status TEXT NOT NULL, instance_id TEXT NOT NULL, npu TEXT NOT NULL, num_prompt_tokens INTEGER,
  num_completion_tokens INTEGER, error TEXT, queued_at INTEGER, started_at INTEGER,
  first_token_at INTEGER, finished_at INTEGER, cold_start_ms INTEGER);
CREATE INDEX IF NOT EXISTS jobs_by_request ON jobs(request_id);
CREATE INDEX IF NOT EXISTS tasks_by_request ON tasks(request_id);
CREATE INDEX IF NOT EXISTS tasks_by_job ON tasks(job_id);`;

/** The terminal statuses, for `status NOT IN ${TERMINAL}`. */
export const TERMINAL = "('succeeded', 'failed', 'cancelled')";

/** Creates the tables (and indexes) if missing, and adds the columns older tables lack. */
export function openRecordTables(sql: SqlStorage): void {
  sql.exec(SCHEMA);
  // tables made before tasks had a cold start time
  const cols = sql.exec("SELECT name FROM pragma_table_info('tasks')").toArray();
  if (!cols.some((c) => c.name === "cold_start_ms")) {
    sql.exec("ALTER TABLE tasks ADD COLUMN cold_start_ms INTEGER");
  }
}
