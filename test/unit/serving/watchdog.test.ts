import { describe, expect, it } from "vitest";
import {
  HUNG_AFTER_MS,
  LOST_AFTER_MS,
  type NpuHealth,
  Watchdog,
  type WatchedTask,
} from "../../../shared/serving/watchdog.ts";

const task = (over: Partial<WatchedTask> = {}): WatchedTask => ({
  id: "t1",
  requestId: "r1",
  npu: "a",
  expectedSince: 0,
  batch: false,
  ...over,
});
const health = (entries: [string, NpuHealth | null][]) => new Map(entries);
const busy = (numSteps: number, taskIds = ["t1"]): NpuHealth => ({
  numSteps,
  hasWork: true,
  taskIds,
});

describe("watchdog", () => {
  it("finds a loop with work and no step for HUNG_AFTER_MS hung", () => {
    const w = new Watchdog();
    expect(w.check([task()], health([["a", busy(5)]]), 0)).toEqual({ hung: [], failed: [] });
    expect(w.check([task()], health([["a", busy(6)]]), 1_000).hung).toEqual([]);
    expect(w.check([task()], health([["a", busy(6)]]), 1_000 + HUNG_AFTER_MS - 1).hung).toEqual([]);
    const v = w.check([task()], health([["a", busy(6)]]), 1_000 + HUNG_AFTER_MS);
    expect(v.hung).toEqual(["a"]);
    expect(v.failed.map((f) => f.task.id)).toEqual(["t1"]);
    expect(v.failed[0]?.reason).toMatch(/hung/);
  });

  it("does not count an idle Npu as hung", () => {
    const w = new Watchdog();
    const idle = { numSteps: 5, hasWork: false, taskIds: ["t1"] };
    w.check([task()], health([["a", idle]]), 0);
    expect(w.check([task()], health([["a", idle]]), 10 * HUNG_AFTER_MS).hung).toEqual([]);
  });

  it("fails a task missing from its Npu for LOST_AFTER_MS, not one that comes back", () => {
    const w = new Watchdog();
    const empty = busy(1, []);
    w.check([task()], health([["a", empty]]), 0);
    expect(w.check([task()], health([["a", busy(2)]]), LOST_AFTER_MS - 1).failed).toEqual([]);
    // it was there again: the count starts over
    expect(w.check([task()], health([["a", busy(3, [])]]), LOST_AFTER_MS).failed).toEqual([]);
    const v = w.check([task()], health([["a", busy(4, [])]]), 2 * LOST_AFTER_MS);
    expect(v.failed[0]?.reason).toMatch(/lost the task/);
  });

  it("waits for a decode task's prefill, leaves batch tasks to their runner, fails unreachable Npus", () => {
    const w = new Watchdog();
    const decode = task({ id: "d", expectedSince: null });
    const batch = task({ id: "b", batch: true, npu: "b" });
    const h = health([
      ["a", { numSteps: 1, hasWork: false, taskIds: [] }],
      ["b", null],
    ]);
    w.check([decode, batch], h, 0);
    expect(w.check([decode, batch], h, 10 * LOST_AFTER_MS).failed).toEqual([]);
    const lone = task({ id: "u", npu: "b" });
    w.check([lone], health([["b", null]]), 0);
    const v = w.check([lone], health([["b", null]]), LOST_AFTER_MS);
    expect(v.hung).toEqual([]);
    expect(v.failed[0]?.reason).toMatch(/unreachable/);
  });
});
