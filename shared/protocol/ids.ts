/**
 * Ids derived from other ids. Random ids (request, job, context cache) are minted by the worker
 * (workers/ids.ts); a job's task ids follow from its id, its role and the attempt, so a repeated
 * dispatch of the same attempt carries the same task id and an instance can refuse it (409).
 */
import type { TaskRole } from "../types/records.ts";

export function taskIdFor(jobId: string, role: TaskRole, attempt = 0): string {
  return `task_${jobId.replace(/^job_/, "")}-${role}-${attempt}`;
}

/** The attempt a task id of `taskIdFor` names (0 for an id without one). */
export function attemptOfTask(taskId: string): number {
  const m = /-(\d+)$/.exec(taskId);
  return m ? Number(m[1]) : 0;
}
