/**
 * The hand-assembled wasm read loop behind bench:engine's roofline validates, runs, and sums
 * what a JS loop sums over the same buffer (measureReadBandwidth throws otherwise).
 */
import { describe, expect, it } from "vitest";
import { measureReadBandwidth } from "../../../bench/bandwidth.ts";

describe("measureReadBandwidth", () => {
  it("sums the buffer it times and reports a positive rate", async () => {
    const bw = await measureReadBandwidth(16, 3);
    expect(bw.gbps).toBeGreaterThan(0);
    expect(bw.method).toMatch(/16 MiB/);
  });
});
