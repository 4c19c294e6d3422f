/** A request's Gantt rows: spans per record and role, marks, and the extent. */
import { describe, expect, it } from "vitest";
import { requestTimeline } from "../../../shared/serving/timeline.ts";
import type { RequestRecord, TaskRecord } from "../../../shared/types/records.ts";

function task(role: TaskRecord["role"], times: Partial<TaskRecord>): TaskRecord {
  return {
    id: `task_${role}`,
    jobId: "job_1",
    role,
    status: "succeeded",
    instanceId: `inst_${role}`,
    npu: "n",
    numPromptTokens: 4,
    numCompletionTokens: 3,
    error: null,
    coldStartMs: null,
    queuedAt: null,
    startedAt: null,
    firstTokenAt: null,
    finishedAt: null,
    ...times,
  };
}

function request(tasks: TaskRecord[], finishedAt: number | null): RequestRecord {
  return {
    id: "req_1",
    object: "request",
    tenant: "t",
    model: "m",
    kind: "text_completion",
    status: finishedAt === null ? "running" : "succeeded",
    clientRequestId: null,
    error: null,
    receivedAt: 100,
    queuedAt: 101,
    startedAt: 102,
    firstTokenAt: 110,
    finishedAt,
    jobs: [
      {
        id: "job_1",
        requestId: "req_1",
        kind: "text_completion",
        status: "succeeded",
        queuedAt: 101,
        startedAt: 102,
        firstTokenAt: 110,
        finishedAt,
        tasks,
      },
    ],
  };
}

describe("requestTimeline", () => {
  it("splits a colocated task into queued, prefill and decode with its marks", () => {
    const t = task("colocated", {
      queuedAt: 101,
      startedAt: 103,
      firstTokenAt: 110,
      finishedAt: 120,
    });
    const tl = requestTimeline(request([t], 121), 999);
    expect(tl.rows.map((r) => r.kind)).toEqual(["request", "job", "task"]);
    expect(tl.rows[2]?.label).toBe("colocated on inst_colocated");
    expect(tl.rows[2]?.spans).toEqual([
      { kind: "queued", fromAt: 101, toAt: 103 },
      { kind: "prefill", fromAt: 103, toAt: 110 },
      { kind: "decode", fromAt: 110, toAt: 120 },
    ]);
    expect(tl.rows[2]?.marks).toEqual([
      { kind: "first-token", at: 110 },
      { kind: "finish", at: 120 },
    ]);
    expect([tl.startAt, tl.endAt]).toEqual([100, 121]);
  });

  it("draws PD tasks as one phase each, and unfinished spans up to now", () => {
    const p = task("prefill", {
      queuedAt: 101,
      startedAt: 102,
      firstTokenAt: 105,
      finishedAt: 106,
    });
    const d = task("decode", { queuedAt: 101, startedAt: 106, firstTokenAt: 107 });
    const tl = requestTimeline(request([p, d], null), 150);
    expect(tl.rows[2]?.spans.map((s) => s.kind)).toEqual(["queued", "prefill"]);
    expect(tl.rows[3]?.spans).toEqual([
      { kind: "queued", fromAt: 101, toAt: 106 },
      { kind: "decode", fromAt: 106, toAt: 150 },
    ]);
    expect(tl.endAt).toBe(150);
  });
});
