/**
 * F16 weights in `matmulQ`: the wasm kernel converts halves in a fast path for finite values and
 * an exact path for groups that may hold an infinity or NaN. Every class of half (zeros,
 * subnormals, normals up to 65504, infinities, NaNs) against every class of rounded activation
 * gives the JS reference's bits, one row at a time and in batches (the widened-row path).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { loadWasmKernels } from "../../hosts/node-kernels.ts";
import { f16ToF32, GgmlType } from "../../shared/gguf/gguf.ts";
import type { Kernels } from "../../shared/model/kernels.ts";
import { createJsKernels } from "../../shared/model/kernels-js.ts";
import { actRowBytes } from "../../shared/model/quant.ts";
import { mulberry32 } from "../../shared/random.ts";

const ARENA = 4 << 20;
let js: Kernels;
let wasm: Kernels;

beforeAll(async () => {
  js = createJsKernels(ARENA);
  wasm = await loadWasmKernels(ARENA);
});

// finite halves of every class: zeros, subnormals, the smallest and largest normals, ordinary values
const FINITE = [
  0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x83ff, 0x0400, 0x8400, 0x7bff, 0xfbff, 0x3c00, 0xbc00,
  0x2e66, 0xb266, 0x5640, 0x7800, 0x4000,
];
const NON_FINITE = [0x7c00, 0xfc00, 0x7e00, 0xfe01];
// finite activations: each rounds to a half of another class (zero, subnormal, tie, largest)
const ACTS = [0, -0, 2 ** -24, -(2 ** -20), 2 ** -14, 0.1, -3.7, 1 + 2 ** -11, 65504, -60000];

/** Output bits with every NaN as the one quiet NaN (payloads are not part of the contract). */
function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length), (b, i) =>
    Number.isNaN(a[i]) ? 0x7fc00000 : b,
  );
}

function run(k: Kernels, x: Float32Array, w: Uint8Array, m: number, n: number, d: number) {
  const xs = k.alloc(x.length);
  xs.set(x);
  const ws = k.allocBytes(w.length);
  ws.set(w);
  const out = k.alloc(m * d);
  k.matmulQ(out, d, xs, ws, GgmlType.F16, m, n, d, k.allocBytes(m * actRowBytes(GgmlType.F16, n)));
  return out;
}

describe("matmulQ F16 edge values", () => {
  it("every class of half weight times every class of activation: js = wasm bit for bit", () => {
    const n = 72; // nine groups of eight
    const d = 13; // three groups of four rows, then one row alone
    const rng = mulberry32(16);
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rng() * a.length)] as T;
    const w = new Uint8Array(2 * n * d);
    for (let j = 0; j < d; j++) {
      for (let k = 0; k < n; k++) {
        // rows 4..7 and 12 hold infinities and NaNs; the others only finite halves
        const nonFinite = (j >= 4 && j < 8) || j === 12;
        const h = nonFinite && rng() < 0.05 ? pick(NON_FINITE) : pick(FINITE);
        w[2 * (j * n + k)] = h & 0xff;
        w[2 * (j * n + k) + 1] = h >> 8;
      }
    }
    for (const m of [1, 3]) {
      const x = Float32Array.from({ length: m * n }, () => pick(ACTS));
      const a = run(js, x, w, m, n, d);
      expect(bits(run(wasm, x, w, m, n, d))).toEqual(bits(a));
      for (let i = 0; i < m; i++) {
        // rows of finite halves give finite sums; the rows with an infinity or NaN do not
        for (let j = 0; j < d; j++) {
          const nonFinite = (j >= 4 && j < 8) || j === 12;
          expect(Number.isFinite(a[i * d + j]), `row ${i}, column ${j}`).toBe(!nonFinite);
        }
        // an activation of 7e4 rounds to an infinite half: its products are infinite or NaN
        x[i * n + 5] = 7e4;
      }
      const c = run(js, x, w, m, n, d);
      expect(bits(run(wasm, x, w, m, n, d))).toEqual(bits(c));
      expect(c.every((v) => !Number.isFinite(v))).toBe(true);
    }
  });

  it("a lone subnormal weight times a large activation is exact in both", () => {
    const n = 8;
    const w = new Uint8Array(2 * n * 4);
    w[0] = 0x01; // row 0, k 0: the smallest subnormal half, 2^-24
    const x = new Float32Array(n);
    x[0] = 65504;
    const a = run(js, x, w, 1, n, 4);
    const b = run(wasm, x, w, 1, n, 4);
    expect(bits(b)).toEqual(bits(a));
    expect(a[0]).toBe(f16ToF32(1) * 65504);
  });
});
