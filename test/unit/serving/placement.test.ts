/**
 * A decision's placement: each task on the instance the decision chose for its role, with the
 * task id of that role and attempt and the instance's Npu name.
 */
import { describe, expect, it } from "vitest";
import { taskIdFor } from "../../../shared/protocol/ids.ts";
import { npuName } from "../../../shared/protocol/names.ts";
import { decisionPlacement, pinnedPlacement } from "../../../shared/serving/placement.ts";
import type { ScheduleDecision } from "../../../shared/serving/scheduling.ts";

const decision = (d: Partial<ScheduleDecision>): ScheduleDecision =>
  ({
    deploymentId: "dep",
    mode: "colocated",
    instanceId: null,
    prefillInstanceId: null,
    decodeInstanceId: null,
    ...d,
  }) as ScheduleDecision;

describe("decisionPlacement", () => {
  it("puts a PD job's prefill and decode tasks on their own instances", () => {
    const p = decisionPlacement(
      "job1",
      2,
      decision({ mode: "pd", prefillInstanceId: "i-p", decodeInstanceId: "i-d" }),
    );
    expect(p).toEqual({
      mode: "pd",
      deploymentId: "dep",
      prefill: { taskId: taskIdFor("job1", "prefill", 2), instanceId: "i-p", npu: npuName("i-p") },
      decode: { taskId: taskIdFor("job1", "decode", 2), instanceId: "i-d", npu: npuName("i-d") },
    });
    expect(taskIdFor("job1", "prefill", 2)).not.toBe(taskIdFor("job1", "decode", 2));
  });

  it("sends colocated and moe-attention jobs to the decision's instance", () => {
    const c = decisionPlacement("job1", 0, decision({ instanceId: "i-c" }));
    expect(c).toMatchObject({ mode: "colocated", colocated: { instanceId: "i-c" } });
    const a = decisionPlacement("job1", 0, decision({ mode: "moe-attention", instanceId: "i-a" }));
    expect(a).toMatchObject({
      mode: "moe-attention",
      attention: { instanceId: "i-a", taskId: taskIdFor("job1", "attention", 0) },
    });
  });

  it("refuses a decision without the instance its mode needs", () => {
    expect(() =>
      decisionPlacement("j", 0, decision({ mode: "pd", prefillInstanceId: "p" })),
    ).toThrow(/decode/);
  });

  it("pins a job to the pinned instance as a colocated task", () => {
    expect(pinnedPlacement("j", 1, { deploymentId: "d", instanceId: "i" })).toEqual({
      mode: "colocated",
      deploymentId: "d",
      colocated: { taskId: taskIdFor("j", "colocated", 1), instanceId: "i", npu: npuName("i") },
    });
  });
});
