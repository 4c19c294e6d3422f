/**
 * The one dispatch path: colocated and PD placements reach the right Npus with the right task
 * ids, failures are reported for each task they end, a thrown RPC becomes a 503 value, and a
 * decode refusal frees the prefill side's KV region.
 */
import { describe, expect, it } from "vitest";
import { errorInfo, failure, type Result } from "../../../shared/errors.ts";
import type { Prefilled } from "../../../shared/protocol/messages.ts";
import {
  type Accepted,
  dispatchJob,
  type NpuPort,
  type NpuTask,
  type Placement,
} from "../../../shared/serving/dispatch.ts";
import { GREEDY_SAMPLING } from "../../helpers/sampling.ts";

const TASK = {
  protocolVersion: 1,
  requestId: "req_1",
  jobId: "job_1",
  tenant: "t",
  model: "m",
  prompts: [[1, 2, 3]],
  n: 1,
  maxTokens: 4,
  expectedOutputTokens: 4,
  stripLeadingSpace: false,
  sampling: GREEDY_SAMPLING,
  cacheSalt: "s",
};

const PREFILLED: Prefilled = {
  first: { tokenId: 9, logprob: 0, topLogprobs: [] },
  region: { owner: "p/npu/0", regionId: "kv/x", kind: "durable", seq: 1, byteLength: 8 },
  numCachedTokens: 0,
};

type Call = [string, string, string];

function fakeNpus(behaviour: {
  generate?: (npu: string) => Result<Accepted<string>> | "throw";
  prefill?: (npu: string) => Result<Prefilled>;
}) {
  const calls: Call[] = [];
  const port = (npu: string): NpuPort<string> => ({
    generate: async (t: NpuTask & { prefilled?: Prefilled }) => {
      calls.push(["generate", npu, t.taskId + (t.prefilled ? "+kv" : "")]);
      const r = behaviour.generate?.(npu) ?? {
        ok: true,
        value: { numPromptTokens: 3, stream: npu },
      };
      if (r === "throw") throw new Error("connection lost");
      return r;
    },
    prefill: async (t: NpuTask) => {
      calls.push(["prefill", npu, t.taskId]);
      return behaviour.prefill?.(npu) ?? { ok: true, value: PREFILLED };
    },
    fabricFree: async (a: { regionId: string }) => {
      calls.push(["fabricFree", npu, a.regionId]);
      return true;
    },
  });
  return { calls, port };
}

const colocated: Placement = {
  mode: "colocated",
  deploymentId: "d",
  colocated: { taskId: "task_c", instanceId: "i1", npu: "i1/npu/0" },
};
const pd: Placement = {
  mode: "pd",
  deploymentId: "d",
  prefill: { taskId: "task_p", instanceId: "ip", npu: "ip/npu/0" },
  decode: { taskId: "task_d", instanceId: "id", npu: "id/npu/0" },
};

describe("dispatchJob", () => {
  it("runs a colocated task on its Npu and answers with its stream", async () => {
    const { calls, port } = fakeNpus({});
    const failed: string[] = [];
    const r = await dispatchJob(port, colocated, TASK, "k", (id) => failed.push(id));
    expect(r).toEqual({
      ok: true,
      value: {
        taskId: "task_c",
        instanceId: "i1",
        npu: "i1/npu/0",
        accepted: { numPromptTokens: 3, stream: "i1/npu/0" },
      },
    });
    expect(calls).toEqual([["generate", "i1/npu/0", "task_c"]]);
    expect(failed).toEqual([]);
  });

  it("runs PD as prefill then decode with the KV reference; the decode stream answers", async () => {
    const { calls, port } = fakeNpus({});
    const r = await dispatchJob(port, pd, TASK, "k", () => {});
    expect(r.ok && r.value.taskId).toBe("task_d");
    expect(calls).toEqual([
      ["prefill", "ip/npu/0", "task_p"],
      ["generate", "id/npu/0", "task_d+kv"],
    ]);
  });

  it("fails both PD tasks when prefill fails, and frees the region when decode fails", async () => {
    const refuse = failure(errorInfo("capacity", "full"));
    const a = fakeNpus({ prefill: () => refuse });
    const failedA: string[] = [];
    expect(await dispatchJob(a.port, pd, TASK, "k", (id) => failedA.push(id))).toEqual(refuse);
    expect(failedA).toEqual(["task_p", "task_d"]);

    const b = fakeNpus({ generate: () => refuse });
    const failedB: string[] = [];
    await dispatchJob(b.port, pd, TASK, "k", (id) => failedB.push(id));
    expect(failedB).toEqual(["task_d"]);
    expect(b.calls.at(-1)).toEqual(["fabricFree", "p/npu/0", "kv/x"]);
  });

  it("turns an RPC that threw into a 503 value naming the instance", async () => {
    const { port } = fakeNpus({ generate: () => "throw" });
    const failed: string[] = [];
    const r = await dispatchJob(port, colocated, TASK, "k", (id) => failed.push(id));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error).toMatchObject({ kind: "overloaded", code: "instance_unavailable" });
      expect(r.error.message).toContain("i1");
    }
    expect(failed).toEqual(["task_c"]);
  });
});
