/** The scheduler's recent decisions: summaries, the per-shard ring buffer and the merge. */
import { describe, expect, it } from "vitest";
import {
  DecisionLog,
  type DecisionSummary,
  mergeDecisions,
  summarizeDecision,
} from "../../../shared/serving/decision-log.ts";
import type { ScheduleDecision } from "../../../shared/serving/scheduling.ts";

function summary(requestId: string, at: number): DecisionSummary {
  const s = summarizeDecision(requestId, at, "m", null, {
    deploymentId: "dep_1",
    instanceId: "inst_1",
  });
  if (!s) throw new Error("expected a summary");
  return s;
}

describe("summarizeDecision", () => {
  it("keeps the placement, reason and scores of an Algorithm 1 decision", () => {
    const decision: ScheduleDecision = {
      deploymentId: "dep_1",
      mode: "pd",
      policy: "deepflow",
      instanceId: null,
      prefillInstanceId: "inst_p",
      decodeInstanceId: "inst_d",
      groupReason: "heatmap",
      reason: "prefix",
      balanced: true,
      metric: "tokens",
      numPromptTokens: 10,
      numPromptBlocks: 1,
      predictedOutputTokens: 5,
      groups: [],
      scores: [{ instanceId: "inst_p", load: 3, numMatchedBlocks: 1 }],
      decodeScores: [],
    } as unknown as ScheduleDecision;
    expect(summarizeDecision("req_1", 7, "m", decision, null)).toEqual({
      requestId: "req_1",
      at: 7,
      model: "m",
      deploymentId: "dep_1",
      instanceId: "inst_p",
      decodeInstanceId: "inst_d",
      reason: "prefix",
      groupReason: "heatmap",
      balanced: true,
      scores: [{ instanceId: "inst_p", load: 3, numMatchedBlocks: 1 }],
    });
  });

  it("names a context cache's pin, and nothing when there was no placement", () => {
    expect(summary("req_1", 1).reason).toBe("context-cache");
    expect(summarizeDecision("req_1", 1, "m", null, null)).toBeNull();
  });
});

describe("DecisionLog", () => {
  it("keeps the newest decisions up to its capacity, newest first", () => {
    const log = new DecisionLog(3);
    for (let i = 0; i < 5; i++) log.record(summary(`req_${i}`, i));
    expect(log.recent().map((d) => d.requestId)).toEqual(["req_4", "req_3", "req_2"]);
    expect(log.recent(1).map((d) => d.requestId)).toEqual(["req_4"]);
  });

  it("merges shards newest first", () => {
    const merged = mergeDecisions([[summary("a", 1), summary("c", 3)], [summary("b", 2)]], 2);
    expect(merged.map((d) => d.requestId)).toEqual(["c", "b"]);
  });
});
