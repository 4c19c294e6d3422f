import { describe, expect, it } from "vitest";
import type { RecordState } from "../../../shared/serving/records.ts";
import {
  endedRequest,
  mirrorsToParents,
  taskEnded,
} from "../../../shared/serving/report-effects.ts";

const state = (s: Partial<RecordState>): RecordState => ({
  status: "running",
  startedAt: 1,
  firstTokenAt: null,
  finishedAt: null,
  error: null,
  ...s,
});

describe("report effects", () => {
  it("mirrors a live task's report, never a batch's, and a late one only when forced", () => {
    expect(mirrorsToParents("chat.completion", "running", "auto")).toBe(true);
    expect(mirrorsToParents("batch", "running", "auto")).toBe(false);
    expect(mirrorsToParents("chat.completion", "running", "none")).toBe(false);
    expect(mirrorsToParents("chat.completion", "failed", "auto")).toBe(false);
    expect(mirrorsToParents("chat.completion", "failed", "force")).toBe(true);
  });

  it("says a task ended only when the report moved it to a finished status", () => {
    const done = state({ status: "succeeded", finishedAt: 5 });
    expect(taskEnded(state({}), done)).toBe(true);
    expect(taskEnded(done, done)).toBe(false);
    expect(taskEnded(state({ status: "queued" }), state({}))).toBe(false);
  });

  it("names the request only when this report ended it", () => {
    const req = {
      kind: "text_completion" as const,
      statusBefore: "running" as const,
      receivedAt: 0,
    };
    const done = state({ status: "succeeded", firstTokenAt: 2, finishedAt: 5 });
    expect(endedRequest(req, done)).toEqual({
      kind: "text_completion",
      status: "succeeded",
      receivedAt: 0,
      firstTokenAt: 2,
      finishedAt: 5,
    });
    expect(endedRequest(req, null)).toBeNull();
    expect(endedRequest(req, state({}))).toBeNull();
    expect(endedRequest({ ...req, statusBefore: "succeeded" }, done)).toBeNull();
  });
});
