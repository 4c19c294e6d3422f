/**
 * Where a planned job's tasks go: a scheduling decision (or a pinned instance) turned into the
 * `Placement` the JobExecutor submits, one `TaskPlacement` per task, whose id derives from the
 * job id, the task's role and the attempt (`taskIdFor`). Pure.
 */
import { assert } from "../assert.ts";
import { taskIdFor } from "../protocol/ids.ts";
import type { Placement, TaskPlacement } from "../protocol/messages.ts";
import { npuName } from "../protocol/names.ts";
import type { InstanceRole } from "../types/records.ts";
import type { ScheduleDecision } from "./scheduling.ts";

/** The task of role `role` of attempt `attempt` of job `jobId`, on `instanceId`'s Npu. */
export function taskPlacement(
  jobId: string,
  role: InstanceRole,
  attempt: number,
  instanceId: string,
): TaskPlacement {
  return { taskId: taskIdFor(jobId, role, attempt), instanceId, npu: npuName(instanceId) };
}

/** The placement of a job pinned to one colocated instance (a context cache's). */
export function pinnedPlacement(
  jobId: string,
  attempt: number,
  pinned: { deploymentId: string; instanceId: string },
): Placement {
  const colocated = taskPlacement(jobId, "colocated", attempt, pinned.instanceId);
  return { mode: "colocated", deploymentId: pinned.deploymentId, colocated };
}

/** The placement Algorithm 1's decision `d` gives the job's tasks. */
export function decisionPlacement(jobId: string, attempt: number, d: ScheduleDecision): Placement {
  const at = (role: InstanceRole, instanceId: string | null): TaskPlacement => {
    assert(instanceId !== null, `a ${d.mode} decision without its ${role} instance`);
    return taskPlacement(jobId, role, attempt, instanceId);
  };
  const { deploymentId } = d;
  switch (d.mode) {
    case "moe-attention":
      return { mode: d.mode, deploymentId, attention: at("attention", d.instanceId) };
    case "pd":
      return {
        mode: d.mode,
        deploymentId,
        prefill: at("prefill", d.prefillInstanceId),
        decode: at("decode", d.decodeInstanceId),
      };
    default:
      return { mode: "colocated", deploymentId, colocated: at("colocated", d.instanceId) };
  }
}
