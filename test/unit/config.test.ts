/** The [vars] the scaling code reads are validated like the others. */
import { describe, expect, it } from "vitest";
import { parseServingConfig } from "../../shared/config.ts";

describe("parseServingConfig (scaling vars)", () => {
  it("applies the defaults and converts units", () => {
    const c = parseServingConfig({});
    expect(c.poolSize).toBe(8);
    expect(c.scaleToZeroAfterMs).toBe(300_000);
    expect(c.npuKvCacheBytes).toBe(8 * 2 ** 20);
  });

  it("accepts strings as wrangler passes them", () => {
    const c = parseServingConfig({
      POOL_SIZE: "0",
      SCALE_TO_ZERO_AFTER_S: "60",
      NPU_KV_CACHE_MB: "2",
    });
    expect(c).toMatchObject({
      poolSize: 0,
      scaleToZeroAfterMs: 60_000,
      npuKvCacheBytes: 2 * 2 ** 20,
    });
  });

  it("names every bad variable", () => {
    expect(() => parseServingConfig({ POOL_SIZE: "-1", SCALE_TO_ZERO_AFTER_S: "0" })).toThrow(
      /POOL_SIZE.*SCALE_TO_ZERO_AFTER_S|SCALE_TO_ZERO_AFTER_S.*POOL_SIZE/,
    );
    expect(() => parseServingConfig({ POOL_SIZE: "two" })).toThrow(/POOL_SIZE/);
  });

  it("keys the prefix tree every 512 tokens by default, in whole KV blocks", () => {
    expect(parseServingConfig({}).prefixIndexTokens).toBe(512);
    expect(parseServingConfig({ PREFIX_INDEX_TOKENS: "16" }).prefixIndexTokens).toBe(16);
    expect(() => parseServingConfig({ PREFIX_INDEX_TOKENS: "24" })).toThrow(
      /PREFIX_INDEX_TOKENS must be a multiple of KV_BLOCK_SIZE/,
    );
  });
});
