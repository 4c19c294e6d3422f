import { describe, expect, it } from "vitest";
import {
  decideClaim,
  type IdempotencyEntry,
  idempotencyKeyProblem,
  isReplayable,
  RUNNING_LEASE_MS,
} from "../../../shared/serving/idempotency.ts";

const entry = (over: Partial<IdempotencyEntry> = {}): IdempotencyEntry => ({
  fingerprint: "f1",
  requestId: "req_1",
  state: "done",
  createdAt: 1_000,
  expiresAt: 10_000,
  status: 201,
  contentType: "application/json",
  body: "{}",
  ...over,
});

describe("idempotency rules", () => {
  it("claims a free or expired key and replays a finished one", () => {
    expect(decideClaim(null, "f1", 0).kind).toBe("claimed");
    expect(decideClaim(entry(), "f1", 10_000).kind).toBe("claimed");
    expect(decideClaim(entry(), "f1", 9_999)).toEqual({
      kind: "replay",
      requestId: "req_1",
      status: 201,
      contentType: "application/json",
      body: "{}",
    });
  });

  it("refuses another fingerprint, and a running key until its lease ends", () => {
    expect(decideClaim(entry(), "f2", 2_000).kind).toBe("mismatch");
    const running = entry({ state: "running", expiresAt: 10 * RUNNING_LEASE_MS });
    expect(decideClaim(running, "f1", 1_000 + RUNNING_LEASE_MS - 1).kind).toBe("in_progress");
    expect(decideClaim(running, "f1", 1_000 + RUNNING_LEASE_MS).kind).toBe("claimed");
    expect(decideClaim(entry({ state: "too_large" }), "f1", 2_000).kind).toBe("too_large");
  });

  it("validates keys and which answers are kept", () => {
    expect(idempotencyKeyProblem("abc-123")).toBeNull();
    expect(idempotencyKeyProblem("")).not.toBeNull();
    expect(idempotencyKeyProblem("é")).not.toBeNull();
    expect(idempotencyKeyProblem("k".repeat(256))).not.toBeNull();
    expect(isReplayable(200, null)).toBe(true);
    expect(isReplayable(400, "invalid_type")).toBe(true);
    expect(isReplayable(429, null)).toBe(false);
    expect(isReplayable(503, null)).toBe(false);
    expect(isReplayable(409, "idempotency_key_in_use")).toBe(false);
  });
});
