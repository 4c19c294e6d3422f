/**
 * One batch job's run, for the BatchRunner: its placement on a colocated deployment (scaling one
 * from zero first when none serves), its dispatch through the one dispatch path, and the OpenAI
 * response body collected from its task's stream. The runner records the outcome (batch-runner.ts).
 */

import type { ErrorInfo } from "../shared/errors.ts";
import { decodeEvents } from "../shared/protocol/codec.ts";
import { streamingTask } from "../shared/protocol/messages.ts";
import { modelOrNotFound, noDeployment } from "../shared/serving/admission.ts";
import {
  type BatchJobSpec,
  responseMeta,
  storedResult,
  tapFirstToken,
} from "../shared/serving/batch.ts";
import { dispatchJob } from "../shared/serving/dispatch.ts";
import { collectResponse } from "../shared/serving/openai-response.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import type { BatchHost } from "./batch-runner.ts";
import type { Env } from "./env.ts";
import { idleDeployment } from "./model-directory.ts";
import type { RecordStore } from "./records.ts";

/**
 * How a job's run ended: its response body, an error that fails it, one that may be retried
 * (`retryOf`), or nothing to record (cancelled meanwhile).
 */
export type JobOutcome =
  | { end: "result"; resultJson: string }
  | { end: "fail"; error: ErrorInfo }
  | { end: "retry"; error: ErrorInfo }
  | { end: "none" };

/** Whether the job is still queued or running (not cancelled, not ended). */
export function isLive(records: RecordStore, jobId: string): boolean {
  const s = records.read().jobStatus(jobId);
  return s === "queued" || s === "running";
}

/** Cancels a task on its Npu (which frees its KV blocks). */
export function cancelTask(
  env: Env,
  t: { id: string; npu: string },
  reason: string,
): Promise<unknown> {
  return env.NPU.getByName(t.npu).cancel({ taskId: t.id, reason });
}

/** Plans the job, runs it through the one dispatch path and collects its response (or error). */
export async function runJob(
  host: BatchHost,
  jobId: string,
  row: { requestId: string; spec: BatchJobSpec },
  owner: { tenant: string; model: string },
): Promise<JobOutcome> {
  const { requestId, spec } = row;
  const { records, env } = host;
  const fail = (error: ErrorInfo): JobOutcome => ({ end: "fail", error });
  const retry = (error: ErrorInfo): JobOutcome => ({ end: "retry", error });
  const { tenant } = owner;
  let model = await host.model(owner.model);
  const found = modelOrNotFound(owner.model, model);
  if (!found.ok) return fail(found.error);
  const colocated = (m: ModelRecord | null) =>
    m?.deployments.filter((d) => d.mode === "colocated") ?? [];
  const idle = idleDeployment(colocated(model));
  if (idle) {
    const cold = await host.scaleFromZero(idle);
    if (!cold.ok) return retry(cold.error);
    model = await host.model(owner.model);
  }
  const deployments = colocated(model);
  if (!model || deployments.length === 0) {
    return fail(noDeployment(found.value, found.value.deployments.length > 0, "batch jobs"));
  }
  const planned = await host.plan(
    {
      spec: {
        requestId,
        jobId,
        tenant,
        model: model.name,
        input: spec.input,
        n: spec.n,
        maxTokens: spec.maxTokens,
        sampling: spec.sampling,
        cacheSalt: spec.cacheSalt ?? null,
        kvCache: spec.kvCache ?? null,
      },
      modelRecord: model,
      deployments,
      pinned: null,
    },
    records.read().numTasks(jobId), // each try gets new task ids
  );
  if (!planned.ok) return retry(planned.error);
  const { placement, task } = planned.value;
  // the deployments offered were colocated ones, so the placement is colocated
  const t = streamingTask(placement);
  if (!isLive(records, jobId)) {
    host.unplan(t.taskId); // cancelled while it was planned
    return { end: "none" };
  }
  records.addTask({
    id: t.taskId,
    jobId,
    requestId,
    role: "colocated",
    instanceId: t.instanceId,
    npu: t.npu,
  });
  const startedAt = Date.now();
  const res = await dispatchJob(
    (name: string) => env.NPU.getByName(name),
    placement,
    task,
    model.r2Key,
    (taskId, error) =>
      void host.onTaskEvent({
        requestId,
        taskId,
        status: "failed",
        finishedAt: Date.now(),
        error: error.message,
      }),
  );
  if (!res.ok) return retry(res.error);
  const stream = res.value.accepted.stream;
  host.log.info("task.dispatched", { requestId, jobId, ...t });
  if (!isLive(records, jobId)) {
    // cancelled while generate() was on its way: the cancel could not find the task yet
    await cancelTask(env, { id: t.taskId, npu: t.npu }, "request cancelled").catch(() => {});
    await stream.cancel().catch(() => {});
    return { end: "none" };
  }
  const events = tapFirstToken(decodeEvents(stream.getReader()), () =>
    records.markFirstToken(jobId, requestId, Date.now()),
  );
  const out = await collectResponse(
    events,
    responseMeta(model.name, spec, t.taskId.slice("task_".length), startedAt),
  );
  if (!out.ok) return fail(out.error);
  const stored = storedResult(out.body);
  if (!stored.ok) return fail(stored.error);
  return { end: "result", resultJson: stored.json };
}
