/**
 * Runs a placed job on its instances. Colocated: one generate task on one Npu. PD: a prefill task
 * on the prefill Npu (prompt + first token, KV written to its fabric region), then a decode task
 * on the decode Npu, which pulls the KV when it has room and streams from the first token on.
 * Returns the Npu and task whose event stream answers the client.
 */

import type { Placement } from "../../durable-objects/job-executor.ts";
import type { GenerateAccepted } from "../../durable-objects/npu.ts";
import type { ErrorInfo, Result } from "../../shared/errors.ts";
import type { Logger } from "../../shared/log.ts";
import type { GenerateTask } from "../../shared/protocol/messages.ts";
import { type Env, jobExecutorFor, npu } from "../env.ts";

export interface Dispatched {
  instanceId: string;
  taskId: string;
  accepted: GenerateAccepted;
}

export async function dispatch(
  env: Env,
  waitUntil: (p: Promise<unknown>) => void,
  log: Logger,
  base: Omit<GenerateTask, "taskId">,
  placement: Placement,
  r2Key: string,
): Promise<Result<Dispatched>> {
  const je = jobExecutorFor(env, base.requestId);
  const failTask = (taskId: string, error: ErrorInfo) =>
    waitUntil(
      je.taskEvent({
        requestId: base.requestId,
        taskId,
        status: "failed",
        finishedAt: Date.now(),
        error: error.message,
      }),
    );
  if (placement.mode === "colocated") {
    const t = placement.colocated;
    const res = await npu(env, t.instanceId).generate({ ...base, taskId: t.taskId, r2Key });
    if (!res.ok) {
      failTask(t.taskId, res.error);
      return res;
    }
    log.info("task.dispatched", { taskId: t.taskId, role: "colocated", instanceId: t.instanceId });
    return { ok: true, value: { instanceId: t.instanceId, taskId: t.taskId, accepted: res.value } };
  }
  const { prefill, decode } = placement;
  log.info("task.dispatched", {
    taskId: prefill.taskId,
    role: "prefill",
    instanceId: prefill.instanceId,
  });
  const pre = await npu(env, prefill.instanceId).prefill({
    ...base,
    taskId: prefill.taskId,
    r2Key,
  });
  if (!pre.ok) {
    failTask(prefill.taskId, pre.error);
    failTask(decode.taskId, pre.error);
    return pre;
  }
  log.info("task.dispatched", {
    taskId: decode.taskId,
    role: "decode",
    instanceId: decode.instanceId,
  });
  const res = await npu(env, decode.instanceId).generate({
    ...base,
    taskId: decode.taskId,
    r2Key,
    prefilled: pre.value,
  });
  if (!res.ok) {
    // the decode side never pulled the KV: free it on the prefill side
    waitUntil(npu(env, prefill.instanceId).fabricFree({ regionId: pre.value.region.regionId }));
    failTask(decode.taskId, res.error);
    return res;
  }
  return {
    ok: true,
    value: { instanceId: decode.instanceId, taskId: decode.taskId, accepted: res.value },
  };
}
