/** The expert-rank failover watch's verdicts (shared/serving/expert-watch.ts). */
import { describe, expect, it } from "vitest";
import type { ExpertRankHealth } from "../../../shared/moe/expert-rank.ts";
import { type ExpertObservation, ExpertWatch } from "../../../shared/serving/expert-watch.ts";

const OPTS = { probeMs: 250, hungAfterMs: 2_000, lostAfterMs: 1_000 };

function h(numServed: number, hasWork: boolean, numFailed = 0): ExpertRankHealth {
  return { numServed, hasWork, numFailed, lastError: numFailed > 0 ? "boom" : null };
}

function round(w: ExpertWatch, obs: [number, ExpertObservation][], now: number) {
  return w.check(new Map(obs), now);
}

describe("ExpertWatch", () => {
  it("a rank with work and no progress for hungAfterMs is hung; progress or no work is not", () => {
    const w = new ExpertWatch(OPTS);
    expect(
      round(
        w,
        [
          [0, h(5, true)],
          [1, h(5, true)],
        ],
        0,
      ).size,
    ).toBe(0);
    // rank 0 progresses; rank 1 has no work at 1000, then work again without progress: its
    // window starts at the last look without work
    expect(
      round(
        w,
        [
          [0, h(6, true)],
          [1, h(5, false)],
        ],
        1_000,
      ).size,
    ).toBe(0);
    expect(
      round(
        w,
        [
          [0, h(7, true)],
          [1, h(5, true)],
        ],
        1_999,
      ).size,
    ).toBe(0);
    expect(
      round(
        w,
        [
          [0, h(8, true)],
          [1, h(5, true)],
        ],
        2_999,
      ).size,
    ).toBe(0);
    const v = round(
      w,
      [
        [0, h(9, true)],
        [1, h(5, true)],
      ],
      3_000,
    );
    expect([...v.keys()]).toEqual([1]);
    expect(v.get(1)).toMatch(/expert rank 1 hung: it has had work and no progress for 2000 ms/);
  });

  it("a reset rank (empty) fails at once; a failed serve fails at the next look", () => {
    const w = new ExpertWatch(OPTS);
    expect(round(w, [[0, "empty"]], 0).get(0)).toMatch(/lost its experts/);
    expect(round(w, [[1, h(3, false)]], 0).size).toBe(0);
    expect(round(w, [[1, h(4, false, 1)]], 250).get(1)).toMatch(/failed a step: boom/);
    // a rank first seen with a failure: ranks start at zero, so it is one
    expect(round(new ExpertWatch(OPTS), [[2, h(0, false, 1)]], 0).get(2)).toMatch(/failed/);
  });

  it("no answer for lostAfterMs is unreachable; an answer in between resets the count", () => {
    const w = new ExpertWatch(OPTS);
    expect(round(w, [[0, null]], 0).size).toBe(0);
    expect(round(w, [[0, h(1, false)]], 500).size).toBe(0);
    expect(round(w, [[0, null]], 600).size).toBe(0);
    expect(round(w, [[0, null]], 1_599).size).toBe(0);
    expect(round(w, [[0, null]], 1_600).get(0)).toMatch(/unreachable: no answer for 1000 ms/);
  });
});
