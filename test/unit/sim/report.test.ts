import { describe, expect, it } from "vitest";
import { median, percentileSorted } from "../../../shared/sim/report.ts";

describe("median and percentileSorted", () => {
  it("takes the middle value, the mean of the middle two for an even count, NaN for none", () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it("leaves its input in place", () => {
    const xs = [3, 1, 2];
    median(xs);
    expect(xs).toEqual([3, 1, 2]);
  });

  it("interpolates percentiles linearly between ranks (numpy's default)", () => {
    // numpy.percentile([10, 20, 30, 40], [0, 25, 90, 100]) = [10, 17.5, 37, 40]
    const sorted = [10, 20, 30, 40];
    expect([0, 25, 90, 100].map((p) => percentileSorted(sorted, p))).toEqual([10, 17.5, 37, 40]);
  });
});
