/**
 * What a task report does beyond its task, decided from the states before and after it (pure;
 * durable-objects/records.ts reads the rows and writes the result): whether the report is
 * mirrored onto the task's job and request, whether it ended the task, and the interactive
 * request it ended (for the serving metrics), if any.
 */
import type { JobKind, RequestKind, RequestStatus } from "../types/records.ts";
import { isTerminal } from "../types/records.ts";
import type { RecordState } from "./records.ts";
import type { EndedRequest } from "./serving-metrics.ts";

/**
 * How a report reaches the job and request: "auto" mirrors unless the task had already ended (a
 * late report of an earlier attempt); "none" ends only the task (a failure held while its job
 * migrates); "force" mirrors onto a task that ended already.
 */
export type MirrorMode = "auto" | "none" | "force";

/** Whether a task's report is mirrored onto its job and request. */
export function mirrorsToParents(
  requestKind: RequestKind,
  taskBefore: RequestStatus,
  mirror: MirrorMode,
): boolean {
  // a batch's jobs and request are kept by its runner (batch-runner.ts)
  const late = isTerminal(taskBefore) && mirror === "auto";
  return requestKind !== "batch" && mirror !== "none" && !late;
}

/** The report moved the task to a terminal status. */
export function taskEnded(before: RecordState, after: RecordState): boolean {
  return after.status !== before.status && after.finishedAt !== null;
}

/** The request the report ended (its kind and times), or null unless this report ended it. */
export function endedRequest(
  request: { kind: JobKind; statusBefore: RequestStatus; receivedAt: number },
  after: RecordState | null,
): EndedRequest | null {
  if (!after || !isTerminal(after.status) || isTerminal(request.statusBefore)) return null;
  return {
    kind: request.kind,
    status: after.status,
    receivedAt: request.receivedAt,
    firstTokenAt: after.firstTokenAt,
    finishedAt: after.finishedAt,
  };
}
