/** Pushed load: reports replace an instance's load; placements count until a report covers them. */
import { describe, expect, it } from "vitest";
import { ESTIMATE_TTL_MS, LoadTable } from "../../../shared/serving/load-table.ts";

const stats = (numRunning: number, numOutstandingTokens: number) => ({
  numRunning,
  numWaiting: 0,
  numFreeBlocks: 100,
  numBlocks: 128,
  numOutstandingTokens,
});

describe("LoadTable", () => {
  it("counts an unreported instance as idle and adds placements until their reports arrive", () => {
    const t = new LoadTable();
    expect(t.load("a")).toEqual({
      numRunning: 0,
      numWaiting: 0,
      numFreeBlocks: 0,
      numOutstandingTokens: 0,
    });
    t.placed("t1", "a", 1, 50, 0);
    t.placed("t2", "a", 2, 30, 0);
    t.placed("t3", "b", 1, 7, 0);
    expect(t.load("a")).toMatchObject({ numWaiting: 3, numOutstandingTokens: 80 });
    // a's report about t1 includes t1: its estimate goes, t2's stays on top of the snapshot
    t.report("t1", "a", stats(1, 45));
    expect(t.load("a")).toMatchObject({ numRunning: 1, numWaiting: 2, numOutstandingTokens: 75 });
    t.forget("t2"); // t2 never reached its instance
    expect(t.load("a")).toMatchObject({ numWaiting: 0, numOutstandingTokens: 45 });
    expect(t.load("b")).toMatchObject({ numWaiting: 1, numOutstandingTokens: 7 });
  });

  it("ignores a repeated or unknown task and never goes negative", () => {
    const t = new LoadTable();
    t.placed("t1", "a", 1, 10, 0);
    t.placed("t1", "a", 1, 10, 0); // the same task placed again replaces its estimate
    expect(t.load("a").numOutstandingTokens).toBe(10);
    t.forget("t1");
    t.forget("t1");
    t.report("zz", "a", undefined);
    expect(t.load("a").numOutstandingTokens).toBe(0);
  });
});

describe("LoadTable expiry", () => {
  it("drops an estimate no report covered within ESTIMATE_TTL_MS", () => {
    const t = new LoadTable();
    t.placed("lost", "a", 1, 50, 0); // its dispatch or report was lost
    t.placed("t2", "a", 1, 5, ESTIMATE_TTL_MS - 1);
    expect(t.load("a").numOutstandingTokens).toBe(55);
    t.placed("t3", "b", 1, 1, ESTIMATE_TTL_MS); // a later placement sweeps the old estimate
    expect(t.load("a").numOutstandingTokens).toBe(5);
  });
});
