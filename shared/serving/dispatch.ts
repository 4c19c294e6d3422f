/**
 * The one way a placed job reaches its instances, for interactive requests (the worker) and
 * batch jobs (the JobExecutor) alike. Colocated: one generate task on one Npu. PD: a prefill task
 * on the prefill Npu (prompt and first token; the KV goes to its fabric region), then a decode
 * task on the decode Npu, which pulls the KV when it has room and streams from the first token
 * on. Returns the task whose event stream answers the client. Pure over `NpuPort`: the host
 * gives the Npu stubs by name. A failed task is reported through `onTaskFailed` (its record ends).
 */
import { type ErrorInfo, errorInfo, failure, type Result } from "../errors.ts";
import {
  type GenerateTask,
  type Placement,
  type Prefilled,
  streamingTask,
  type TaskPlacement,
} from "../protocol/messages.ts";

export type { Placement, TaskPlacement } from "../protocol/messages.ts";

import type { TaskRole } from "../types/records.ts";

/** Each task of a placement with its role. */
export function placedTasks(p: Placement): [TaskRole, TaskPlacement][] {
  if (p.mode === "colocated") return [["colocated", p.colocated]];
  if (p.mode === "moe-attention") return [["attention", p.attention]];
  return [
    ["prefill", p.prefill],
    ["decode", p.decode],
  ];
}

/** What an Npu answers when it accepts a generate task; `S` is the host's byte stream type. */
export interface Accepted<S> {
  numPromptTokens: number;
  /** NDJSON GenerateEvent lines; ends after the usage event or an error event. */
  stream: S;
}

export type NpuTask = GenerateTask & { r2Key: string };

/** The Npu RPCs a dispatch makes (the Npu DO's stub satisfies it). */
export interface NpuPort<S> {
  generate(task: NpuTask & { prefilled?: Prefilled }): Promise<Result<Accepted<S>>>;
  prefill(task: NpuTask): Promise<Result<Prefilled>>;
  fabricFree(a: { regionId: string }): Promise<unknown>;
}

export interface Dispatched<S> {
  instanceId: string;
  taskId: string;
  npu: string;
  accepted: Accepted<S>;
}

/** An RPC to an instance; one that threw (unreachable, crashed) becomes a 503 error value. */
export async function callInstance<T>(
  instanceId: string,
  f: () => Promise<Result<T>>,
): Promise<Result<T>> {
  try {
    return await f();
  } catch {
    return failure(
      errorInfo(
        "overloaded",
        `instance ${instanceId} did not answer; retry shortly`,
        null,
        "instance_unavailable",
      ),
    );
  }
}

export async function dispatchJob<S>(
  npu: (name: string) => NpuPort<S>,
  placement: Placement,
  task: Omit<GenerateTask, "taskId">,
  r2Key: string,
  onTaskFailed: (taskId: string, error: ErrorInfo) => void,
): Promise<Result<Dispatched<S>>> {
  if (placement.mode !== "pd") {
    const t = streamingTask(placement);
    const res = await callInstance(t.instanceId, () =>
      npu(t.npu).generate({ ...task, taskId: t.taskId, r2Key }),
    );
    if (!res.ok) {
      onTaskFailed(t.taskId, res.error);
      return res;
    }
    return { ok: true, value: { ...t, accepted: res.value } };
  }
  const { prefill, decode } = placement;
  const pre = await callInstance(prefill.instanceId, () =>
    npu(prefill.npu).prefill({ ...task, taskId: prefill.taskId, r2Key }),
  );
  if (!pre.ok) {
    onTaskFailed(prefill.taskId, pre.error);
    onTaskFailed(decode.taskId, pre.error);
    return pre;
  }
  const res = await callInstance(decode.instanceId, () =>
    npu(decode.npu).generate({ ...task, taskId: decode.taskId, r2Key, prefilled: pre.value }),
  );
  if (!res.ok) {
    // the decode side never pulled the KV: free it on the prefill side
    const region = pre.value.region;
    void npu(region.owner)
      .fabricFree({ regionId: region.regionId })
      .catch(() => {});
    onTaskFailed(decode.taskId, res.error);
    return res;
  }
  return { ok: true, value: { ...decode, accepted: res.value } };
}
