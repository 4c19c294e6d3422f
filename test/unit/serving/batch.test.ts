/** The batch-inference rules: dispatch slots, back-off, watchdog, recovery, outcomes, records. */
import { describe, expect, it } from "vitest";
import { errorInfo } from "../../../shared/errors.ts";
import { decodeEvents } from "../../../shared/protocol/codec.ts";
import type { GenerateEvent } from "../../../shared/protocol/messages.ts";
import {
  type BatchJobSpec,
  CAPACITY_BACKOFF_MS,
  cancelRefusal,
  capacityPause,
  decorateBatch,
  dispatchSlots,
  interruptedJobs,
  jobCounts,
  MAX_RESULT_BYTES,
  recoverJob,
  requestOutcome,
  responseMeta,
  retryOf,
  shouldSetAlarm,
  storedError,
  storedResult,
  tapFirstToken,
  WATCHDOG_MS,
  watchdogAt,
} from "../../../shared/serving/batch.ts";
import type { JobRecord, JobStatus, RequestRecord } from "../../../shared/types/records.ts";

const counts = (...s: JobStatus[]) => jobCounts(s.map((status) => ({ status, n: 1 })));

const job = (kind: "chat" | "completion" = "completion"): { spec: BatchJobSpec } => ({
  spec: {
    jobId: "job_1",
    kind,
    input:
      kind === "completion"
        ? ({ kind: "completion", prompts: ["a", "b", "c"] } as never)
        : ({ kind: "chat", messages: [] } as never),
    n: 2,
    maxTokens: 8,
    sampling: { logprobs: true } as never,
  },
});

describe("dispatch", () => {
  it("fills up to BATCH_CONCURRENCY (4) jobs in flight", () => {
    expect(dispatchSlots({ inFlight: 0, now: 10, pausedUntil: 0 })).toBe(4);
    expect(dispatchSlots({ inFlight: 3, now: 10, pausedUntil: 0 })).toBe(1);
    expect(dispatchSlots({ inFlight: 4, now: 10, pausedUntil: 0 })).toBe(0);
    expect(dispatchSlots({ inFlight: 5, now: 10, pausedUntil: 0 })).toBe(0);
  });

  it("starts nothing during a capacity pause, then resumes at its end", () => {
    const pausedUntil = capacityPause(100);
    expect(pausedUntil).toBe(100 + CAPACITY_BACKOFF_MS);
    expect(dispatchSlots({ inFlight: 0, now: pausedUntil - 1, pausedUntil })).toBe(0);
    expect(dispatchSlots({ inFlight: 0, now: pausedUntil, pausedUntil })).toBe(4);
  });

  it("pauses on a full queue, retries an unreachable instance a few times, fails the rest", () => {
    const lost = errorInfo("overloaded", "gone", null, "instance_unavailable");
    const rolling = errorInfo("overloaded", "v2", null, "protocol_mismatch");
    expect(retryOf(errorInfo("capacity", "full"), 99)).toBe("pause");
    expect([1, 2, 3].map((a) => retryOf(lost, a))).toEqual(["retry", "retry", "fail"]);
    expect(retryOf(rolling, 1)).toBe("retry");
    expect(retryOf(errorInfo("overloaded", "none", null, "no_deployment"), 1)).toBe("fail");
    expect(retryOf(errorInfo("invalid_request", "long", "prompt"), 1)).toBe("fail");
  });
});

describe("watchdog alarm", () => {
  it("is not set when no work remains", () => {
    expect(watchdogAt({ pending: false, inFlight: 0, now: 5, pausedUntil: 0 })).toBeNull();
  });
  it("fires WATCHDOG_MS from now, or at the end of a pause", () => {
    expect(watchdogAt({ pending: true, inFlight: 0, now: 5, pausedUntil: 0 })).toBe(
      5 + WATCHDOG_MS,
    );
    expect(watchdogAt({ pending: false, inFlight: 1, now: 5, pausedUntil: 0 })).toBe(
      5 + WATCHDOG_MS,
    );
    expect(watchdogAt({ pending: true, inFlight: 0, now: 5, pausedUntil: 900 })).toBe(900);
    expect(watchdogAt({ pending: true, inFlight: 0, now: 900, pausedUntil: 900 })).toBe(
      900 + WATCHDOG_MS,
    );
  });
  it("only moves an alarm earlier", () => {
    expect(shouldSetAlarm(null, 10)).toBe(true);
    expect(shouldSetAlarm(20, 10)).toBe(true);
    expect(shouldSetAlarm(10, 10)).toBe(false);
    expect(shouldSetAlarm(5, 10)).toBe(false);
  });
});

describe("restart recovery", () => {
  it("treats dispatched jobs not in flight here as interrupted", () => {
    const rows = [{ jobId: "a" }, { jobId: "b" }, { jobId: "c" }];
    expect(interruptedJobs(rows, new Set(["b"])).map((r) => r.jobId)).toEqual(["a", "c"]);
  });

  it("requeues until MAX_ATTEMPTS (3) runs, then fails with job_interrupted", () => {
    // a job interrupted by each restart: attempts 1, 2 requeue; the third run's interruption fails
    const seen = [1, 2, 3].map((attempts) => recoverJob({ attempts, stored: false }));
    expect(seen.map((s) => s.action)).toEqual(["requeue", "requeue", "fail"]);
    const last = seen[2];
    if (last?.action !== "fail") throw new Error("expected fail");
    expect(last.error.code).toBe("job_interrupted");
    expect(last.error.kind).toBe("internal");
  });

  it("marks a requeued job done when its outcome is already stored", () => {
    expect(recoverJob({ attempts: 1, stored: false })).toEqual({
      action: "requeue",
      state: "queued",
    });
    expect(recoverJob({ attempts: 1, stored: true })).toEqual({ action: "requeue", state: "done" });
  });
});

describe("request outcome", () => {
  it("stays open while any job is queued or running", () => {
    expect(requestOutcome(counts("succeeded", "queued"))).toBeNull();
    expect(requestOutcome(counts("failed", "running"))).toBeNull();
  });
  it("succeeds when at least one job succeeded", () => {
    expect(requestOutcome(counts("failed", "succeeded", "cancelled"))).toEqual({
      status: "succeeded",
      error: null,
    });
  });
  it("fails when no job succeeded", () => {
    const end = requestOutcome(counts("failed", "failed"));
    expect(end?.status).toBe("failed");
    expect(end?.error).toMatch(/every job/);
    expect(requestOutcome(counts("failed", "cancelled"))?.status).toBe("failed");
  });
  it("counts jobs per status", () => {
    expect(
      jobCounts([
        { status: "queued", n: 2 },
        { status: "failed", n: 1 },
      ]),
    ).toEqual({
      total: 3,
      queued: 2,
      running: 0,
      succeeded: 0,
      failed: 1,
      cancelled: 0,
    });
  });
});

describe("results", () => {
  it("stores a body up to MAX_RESULT_BYTES and refuses a bigger one", () => {
    const ok = storedResult({ a: 1 });
    expect(ok).toEqual({ ok: true, json: '{"a":1}' });
    const fits = { s: "x".repeat(MAX_RESULT_BYTES - 8) }; // {"s":"..."} is 8 bytes of framing
    expect(storedResult(fits).ok).toBe(true);
    const big = storedResult({ s: "x".repeat(MAX_RESULT_BYTES - 7) });
    expect(big.ok).toBe(false);
    if (!big.ok) expect(big.error.code).toBe("result_too_large");
  });
  it("measures UTF-8 bytes, not characters", () => {
    const r = storedResult({ s: "é".repeat(MAX_RESULT_BYTES / 2) });
    expect(r.ok).toBe(false);
  });
  it("stores errors as the OpenAI envelope's error", () => {
    const e = storedError(errorInfo("not_found", "gone", "model", "model_not_found"));
    expect(e).toMatchObject({ message: "gone", param: "model", code: "model_not_found" });
  });
});

describe("cancel refusals", () => {
  it("refuses unknown and finished requests", () => {
    expect(cancelRefusal("r", null)?.code).toBe("request_not_found");
    for (const s of ["succeeded", "failed", "cancelled"] as const) {
      expect(cancelRefusal("r", s)?.code).toBe("request_already_finished");
    }
    expect(cancelRefusal("r", "queued")).toBeNull();
    expect(cancelRefusal("r", "running")).toBeNull();
  });
});

describe("a job's messages", () => {
  it("counts prompts times choices", () => {
    expect(responseMeta("m", job("completion").spec, "u", 0).numChoices).toBe(6);
    expect(responseMeta("m", job("chat").spec, "u", 0).numChoices).toBe(2);
  });
  it("builds the response metadata", () => {
    expect(responseMeta("m", job("chat").spec, "u1", 12_345)).toEqual({
      id: "chatcmpl-u1",
      created: 12,
      model: "m",
      kind: "chat",
      numChoices: 2,
      logprobs: true,
    });
    expect(responseMeta("m", job("completion").spec, "u1", 0).id).toBe("cmpl-u1");
  });
});

describe("event streams", () => {
  it("decodes NDJSON chunks and calls onFirst once at the first delta", async () => {
    const lines = [{ type: "usage" }, { type: "delta" }, { type: "delta" }].map((e) =>
      JSON.stringify(e),
    );
    const bytes = new TextEncoder().encode(lines.join("\n"));
    const chunks = [bytes.slice(0, 5), bytes.slice(5)];
    let cancelled = false;
    let released = false;
    const reader = {
      read: async () => {
        const value = chunks.shift();
        return value ? { done: false as const, value } : { done: true as const };
      },
      cancel: async () => {
        cancelled = true;
      },
      releaseLock: () => {
        released = true;
      },
    };
    let firsts = 0;
    const out: GenerateEvent[] = [];
    for await (const e of tapFirstToken(decodeEvents(reader), () => firsts++)) out.push(e);
    expect(out.map((e) => e.type)).toEqual(["usage", "delta", "delta"]);
    expect(firsts).toBe(1);
    // read to the end: the lock is released, nothing is cancelled
    expect([released, cancelled]).toEqual([true, false]);
  });
});

describe("request records", () => {
  it("adds index, result and error in item order and counts the jobs", () => {
    const j = (id: string, status: JobStatus) => ({ id, status }) as JobRecord;
    const rec = { id: "req_1", jobs: [j("b", "failed"), j("a", "succeeded")] } as RequestRecord;
    const out = decorateBatch(rec, [
      { jobId: "b", index: 1, result: null, error: '{"message":"x"}' },
      { jobId: "a", index: 0, result: '{"ok":1}', error: null },
      { jobId: "gone", index: 2, result: null, error: null },
    ]);
    expect(out.jobs.map((x) => [x.id, x.index])).toEqual([
      ["a", 0],
      ["b", 1],
    ]);
    expect(out.jobs[0]?.result).toEqual({ ok: 1 });
    expect(out.jobs[1]?.error).toEqual({ message: "x" });
    expect(out.jobCounts).toMatchObject({ total: 2, succeeded: 1, failed: 1 });
  });
});
