/**
 * copyRegion (weight-tiers.ts), the target side of NPU-fork, in workerd (its BYOB `readAtLeast`
 * is workerd's): a region streamed in small and odd-sized chunks lands byte for byte in the view
 * it was given, and a stream that ends early, runs past the region or fails is refused.
 */
import { describe, expect, it } from "vitest";
import { copyRegion } from "../../durable-objects/weight-tiers.ts";
import { mulberry32 } from "../../shared/random.ts";

/** A native byte stream (as an RPC delivers one) that sends `bytes` in chunks of `sizes`. */
function streamOf(bytes: Uint8Array, sizes: number[], fail = false): ReadableStream<Uint8Array> {
  const { readable, writable } = new IdentityTransformStream();
  const w = writable.getWriter();
  void (async () => {
    let at = 0;
    for (let i = 0; at < bytes.byteLength; i++) {
      const n = sizes[i % sizes.length] as number;
      await w.write(bytes.slice(at, at + n));
      at += n;
    }
    if (fail) await w.abort(new Error("the source went away"));
    else await w.close();
  })().catch(() => {});
  return readable;
}

function randomBytes(n: number, seed: number): Uint8Array {
  const rng = mulberry32(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(rng() * 256));
}

describe("copyRegion", () => {
  it("copies a region sent in uneven chunks byte for byte into the view, past the read size", async () => {
    // 9 MiB + 3: more than two 4 MiB reads, the last one short
    const region = randomBytes(9 * 2 ** 20 + 3, 7);
    const arena = new Uint8Array(region.byteLength + 64).fill(0xee);
    const into = new Uint8Array(arena.buffer, 32, region.byteLength);
    expect(await copyRegion(streamOf(region, [4096, 65_537, 1_000_000]), into)).toBe(true);
    expect(into.every((b, i) => b === region[i])).toBe(true);
    // nothing written outside the view
    expect(arena.subarray(0, 32).every((b) => b === 0xee)).toBe(true);
    expect(arena.subarray(32 + region.byteLength).every((b) => b === 0xee)).toBe(true);
  });

  it("refuses a stream that ends early, runs past the region or fails", async () => {
    const region = randomBytes(100_000, 9);
    const into = () => new Uint8Array(region.byteLength);
    expect(await copyRegion(streamOf(region.subarray(0, 99_999), [4096]), into())).toBe(false);
    const longer = new Uint8Array(region.byteLength + 1);
    longer.set(region);
    expect(await copyRegion(streamOf(longer, [4096]), into())).toBe(false);
    expect(await copyRegion(streamOf(region, [4096], true), into())).toBe(false);
  });
});
