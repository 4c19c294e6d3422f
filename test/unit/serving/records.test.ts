/** Record lifecycle rules: forward-only statuses, first timestamps, how tasks end their job. */
import { describe, expect, it } from "vitest";
import {
  applyToParent,
  applyToTask,
  endsJob,
  nextStatus,
  type RecordState,
} from "../../../shared/serving/records.ts";
import type { RequestStatus } from "../../../shared/types/records.ts";

const queued: RecordState = {
  status: "queued",
  startedAt: null,
  firstTokenAt: null,
  finishedAt: null,
  error: null,
};

const STATUSES: RequestStatus[] = ["queued", "running", "succeeded", "failed", "cancelled"];

describe("nextStatus", () => {
  it("moves forward only and keeps terminal statuses", () => {
    const table = STATUSES.map((from) => STATUSES.map((to) => nextStatus(from, to)));
    expect(table).toEqual([
      ["queued", "running", "succeeded", "failed", "cancelled"],
      ["running", "running", "succeeded", "failed", "cancelled"],
      ["succeeded", "succeeded", "succeeded", "succeeded", "succeeded"],
      ["failed", "failed", "failed", "failed", "failed"],
      ["cancelled", "cancelled", "cancelled", "cancelled", "cancelled"],
    ]);
  });
});

describe("applyToTask", () => {
  it("keeps the first timestamps and ends once, whatever order reports arrive in", () => {
    const reports = [
      { status: "running" as const, startedAt: 10 },
      { firstTokenAt: 12 },
      { status: "succeeded" as const, finishedAt: 20, numCompletionTokens: 4 },
      { status: "failed" as const, finishedAt: 30, error: "late" },
      { status: "running" as const, startedAt: 40, firstTokenAt: 41 },
    ];
    const forward = reports.reduce(applyToTask, queued);
    expect(forward).toEqual({
      status: "succeeded",
      startedAt: 10,
      firstTokenAt: 12,
      finishedAt: 20,
      error: null,
    });
    // the terminal report first: later ones change no status, and finishedAt stays its own
    const shuffled = [reports[2]!, reports[4]!, reports[0]!, reports[3]!].reduce(
      applyToTask,
      queued,
    );
    expect(shuffled.status).toBe("succeeded");
    expect(shuffled.finishedAt).toBe(20);
    expect(shuffled.error).toBeNull();
  });

  it("keeps the error of the report that ended it", () => {
    const t = applyToTask(queued, { status: "failed", finishedAt: 5, error: "engine failure" });
    expect(t).toMatchObject({ status: "failed", finishedAt: 5, error: "engine failure" });
  });
});

describe("applyToParent", () => {
  it("a prefill task's success starts the job; the decode task ends it", () => {
    expect(endsJob("prefill", "succeeded")).toBe(false);
    expect(endsJob("prefill", "failed")).toBe(true);
    expect(endsJob("decode", "succeeded")).toBe(true);
    expect(endsJob("colocated", "running")).toBe(false);
    let job = applyToParent(queued, "prefill", { status: "running", startedAt: 3 }, false);
    job = applyToParent(
      job,
      "prefill",
      { status: "succeeded", finishedAt: 5, firstTokenAt: 5 },
      false,
    );
    expect(job).toMatchObject({
      status: "running",
      startedAt: 3,
      firstTokenAt: 5,
      finishedAt: null,
    });
    job = applyToParent(job, "decode", { status: "succeeded", finishedAt: 9 }, false);
    expect(job).toMatchObject({ status: "succeeded", finishedAt: 9 });
  });

  it("takes a failing task's error on the request only", () => {
    const p = { status: "failed" as const, finishedAt: 4, error: "no room" };
    expect(applyToParent(queued, "colocated", p, true).error).toBe("no room");
    expect(applyToParent(queued, "colocated", p, false).error).toBeNull();
  });
});
