/**
 * Npu tasks for the DO-level tests: a greedy GenerateTask (EOS ignored, so every run has the same
 * length) and the token ids an Npu streams back for one.
 */
import { decodeEvents } from "../../shared/protocol/codec.ts";
import type { GenerateTask } from "../../shared/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol/version.ts";
import { GREEDY_SAMPLING } from "../helpers/sampling.ts";

export type NpuTask = GenerateTask & { r2Key: string };

/** A greedy task of `maxTokens` tokens for `prompt` (ids), ids derived from `id`. */
export function greedyTask(
  model: string,
  id: string,
  prompt: number[],
  maxTokens: number,
  r2Key = `models/${model}.gguf`,
): NpuTask {
  return {
    protocolVersion: PROTOCOL_VERSION,
    requestId: `req_${id}`,
    jobId: `job_${id}`,
    taskId: `task_${id}`,
    tenant: "test",
    model,
    prompts: [prompt],
    n: 1,
    maxTokens,
    expectedOutputTokens: maxTokens,
    stripLeadingSpace: false,
    sampling: { ...GREEDY_SAMPLING, ignoreEos: true },
    cacheSalt: "test",
    r2Key,
  };
}

/** Runs `t` on `npu`: the token ids streamed, and the completion tokens its usage reported. */
export async function tokensOf(
  npu: { generate: (t: NpuTask) => Promise<unknown> },
  t: NpuTask,
): Promise<{ ids: number[]; completionTokens: number }> {
  const r = (await npu.generate(t)) as
    | { ok: true; value: { stream: ReadableStream<Uint8Array> } }
    | { ok: false; error: { message: string } };
  if (!r.ok) throw new Error(r.error.message);
  const ids: number[] = [];
  let completionTokens = -1;
  for await (const e of decodeEvents(r.value.stream.getReader())) {
    if (e.type === "error") throw new Error(e.error.message);
    if (e.type === "delta") ids.push(...e.tokenIds);
    if (e.type === "usage") completionTokens = e.completionTokens;
  }
  return { ids, completionTokens };
}
