/**
 * Kernel tests: the JS and wasm SIMD kernels against naive float64 references, their bit-identity
 * to each other, batch-independence (determinism), the arena, argument checks, and that the
 * committed wasm/kernels.wasm and wasm/kernels-relaxed.wasm are what `npm run build:wasm` produces
 * from wasm/kernels.ts. The "unit-relaxed" vitest project runs this file again under
 * --experimental-wasm-relaxed-simd, where the relaxed build is the one tested.
 */

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import {
  createKernels,
  loadWasmKernels,
  WASM_BUILD,
  WASM_KERNELS_URL,
} from "../../hosts/node-kernels.ts";
import { InvariantError } from "../../shared/assert.ts";
import { KernelMemoryError, type Kernels } from "../../shared/model/kernels.ts";
import { createJsKernels, expf as jsExpf } from "../../shared/model/kernels-js.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../../shared/model/kernels-wasm.ts";
import { mulberry32 } from "../../shared/random.ts";

const REPO = fileURLToPath(new URL("../../", import.meta.url));
const ARENA = 16 << 20;

type Pair = { js: Kernels; wasm: Kernels };
let pair: Pair;

beforeAll(async () => {
  pair = { js: createJsKernels(ARENA), wasm: await loadWasmKernels(ARENA) };
});

// ---------------------------------------------------------------------------------------------
// Helpers

function fillUniform(a: Float32Array, rng: () => number, scale = 1): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = (rng() * 2 - 1) * scale;
  return a;
}

function randomArray(k: Kernels, n: number, rng: () => number, scale = 1): Float32Array {
  return fillUniform(k.alloc(n), rng, scale);
}

function copyInto(k: Kernels, src: ArrayLike<number>): Float32Array {
  const a = k.alloc(src.length);
  a.set(src);
  return a;
}

/** Bit patterns, so that -0 vs 0 and NaN payloads count as differences. */
function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

function expectClose(got: Float32Array, want: Float64Array, tol: Float64Array | number): void {
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < want.length; i++) {
    const t = typeof tol === "number" ? tol : (tol[i] as number);
    const err = Math.abs((got[i] as number) - (want[i] as number));
    const excess = err - (1e-5 * Math.abs(want[i] as number) + t);
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess)) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) {
    expect.fail(`element ${worst}: got ${got[worst]}, want ${want[worst]} (excess ${worstExcess})`);
  }
}

// X (m, n) @ W^T (d, n) -> out (m, d), float64, plus sum |x w| per element for the tolerance.
function naiveMatmul(x: Float32Array, w: Float32Array, m: number, n: number, d: number) {
  const out = new Float64Array(m * d);
  const mag = new Float64Array(m * d);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < d; j++) {
      let s = 0;
      let a = 0;
      for (let k = 0; k < n; k++) {
        const p = (x[i * n + k] as number) * (w[j * n + k] as number);
        s += p;
        a += Math.abs(p);
      }
      out[i * d + j] = s;
      mag[i * d + j] = a;
    }
  }
  return { out, mag };
}

interface AttnShape {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  blockSize: number;
  numKeys: number;
  qScale?: number;
}

/** Contiguous attention in float64: k, v are (numKeys, numKvHeads * headDim). */
function naiveAttention(q: Float32Array, k: Float32Array, v: Float32Array, s: AttnShape) {
  const { numHeads, numKvHeads, headDim, numKeys } = s;
  const row = numKvHeads * headDim;
  const out = new Float64Array(numHeads * headDim);
  for (let h = 0; h < numHeads; h++) {
    const kvh = Math.floor(h / (numHeads / numKvHeads));
    const sc = new Float64Array(numKeys);
    let mx = Number.NEGATIVE_INFINITY;
    for (let t = 0; t < numKeys; t++) {
      let dot = 0;
      for (let c = 0; c < headDim; c++) {
        dot += (q[h * headDim + c] as number) * (k[t * row + kvh * headDim + c] as number);
      }
      sc[t] = dot / Math.sqrt(headDim);
      mx = Math.max(mx, sc[t] as number);
    }
    let sum = 0;
    for (let t = 0; t < numKeys; t++) {
      sc[t] = Math.exp((sc[t] as number) - mx);
      sum += sc[t] as number;
    }
    for (let t = 0; t < numKeys; t++) {
      for (let c = 0; c < headDim; c++) {
        out[h * headDim + c] =
          (out[h * headDim + c] as number) +
          ((sc[t] as number) / sum) * (v[t * row + kvh * headDim + c] as number);
      }
    }
  }
  return out;
}

/** A paged layout of contiguous k, v: a shuffled block table, with spare blocks full of NaN. */
function pagedLayout(s: AttnShape, rng: () => number) {
  const numUsed = Math.ceil(s.numKeys / s.blockSize);
  const numBlocks = numUsed + 3;
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [ids[i], ids[j]] = [ids[j] as number, ids[i] as number];
  }
  return { numBlocks, table: ids.slice(0, numUsed) };
}

function runAttention(k: Kernels, s: AttnShape, seed: number, inPlace = false) {
  const rng = mulberry32(seed);
  const row = s.numKvHeads * s.headDim;
  const q = fillUniform(new Float32Array(s.numHeads * s.headDim), rng, s.qScale ?? 1);
  const kc = fillUniform(new Float32Array(s.numKeys * row), rng);
  const vc = fillUniform(new Float32Array(s.numKeys * row), rng);
  const { numBlocks, table } = pagedLayout(s, rng);
  const kCache = k.alloc(numBlocks * s.blockSize * row).fill(Number.NaN);
  const vCache = k.alloc(numBlocks * s.blockSize * row).fill(Number.NaN);
  for (let t = 0; t < s.numKeys; t++) {
    const r = (table[Math.floor(t / s.blockSize)] as number) * s.blockSize + (t % s.blockSize);
    kCache.set(kc.subarray(t * row, (t + 1) * row), r * row);
    vCache.set(vc.subarray(t * row, (t + 1) * row), r * row);
  }
  const blockTable = k.allocInt32(table.length + 2).fill(-1);
  blockTable.set(table);
  const qk = copyInto(k, q);
  const out = inPlace ? qk : k.alloc(q.length);
  const scores = k.alloc(s.numKeys);
  k.attention(
    out,
    qk,
    kCache,
    vCache,
    blockTable,
    s.numKeys,
    s.numHeads,
    s.numKvHeads,
    s.headDim,
    s.blockSize,
    scores,
  );
  return { out, want: naiveAttention(q, kc, vc, s) };
}

// ---------------------------------------------------------------------------------------------
// matmul

const MATMUL_SHAPES: [number, number, number][] = [
  [3, 67, 13],
  [1, 67, 13],
  [1, 64, 64],
  [1, 64, 172],
  [5, 64, 172],
  [32, 64, 172],
  [7, 8, 9],
  [2, 1, 1],
  [1, 3, 5],
  [1, 64, 12],
  [4, 256, 256],
  [3, 5, 0],
];

describe("matmul", () => {
  for (const [m, n, d] of MATMUL_SHAPES) {
    it(`(${m}, ${n}) @ (${d}, ${n})^T matches float64 and is bit-identical across js/wasm`, () => {
      const results: Float32Array[] = [];
      for (const k of [pair.js, pair.wasm]) {
        const rng = mulberry32(1000 + m * 7 + n * 13 + d);
        const x = randomArray(k, m * n, rng);
        const w = randomArray(k, d * n, rng);
        const out = k.alloc(m * d).fill(Number.NaN);
        k.matmul(out, x, w, m, n, d);
        const ref = naiveMatmul(x, w, m, n, d);
        const tol = ref.mag.map((a) => 1e-6 * a);
        expectClose(out, ref.out, tol);
        results.push(out);
      }
      expect(bits(results[1] as Float32Array)).toEqual(bits(results[0] as Float32Array));
    });
  }

  it("m = 0 and n = 0 are well defined", () => {
    for (const k of [pair.js, pair.wasm]) {
      const out = k.alloc(4).fill(7);
      const x = k.alloc(0);
      const w = k.alloc(0);
      k.matmul(out, x, w, 0, 0, 4);
      expect(Array.from(out)).toEqual([7, 7, 7, 7]);
      k.matmul(out, k.alloc(2), w, 2, 0, 2);
      expect(Array.from(out)).toEqual([0, 0, 0, 0]);
    }
  });

  it("works on unaligned subarray views (same bits as aligned arrays)", () => {
    const [m, n, d] = [5, 37, 11];
    for (const k of [pair.js, pair.wasm]) {
      const rng = mulberry32(42);
      const x = randomArray(k, m * n, rng);
      const w = randomArray(k, d * n, rng);
      const out = k.alloc(m * d);
      k.matmul(out, x, w, m, n, d);
      const xs = k.alloc(m * n + 1).subarray(1);
      const ws = k.alloc(d * n + 3).subarray(3);
      const big = k.alloc(m * d + 2);
      const outs = big.subarray(1, 1 + m * d);
      xs.set(x);
      ws.set(w);
      k.matmul(outs, xs, ws, m, n, d);
      expect(bits(outs)).toEqual(bits(out));
      expect(big[0]).toBe(0);
      expect(big[m * d + 1]).toBe(0);
    }
  });

  it("a row's result does not depend on the batch around it", () => {
    for (const [n, d] of [
      [64, 172],
      [67, 13],
      [256, 64],
    ] as [number, number][]) {
      const perImpl: number[][] = [];
      for (const k of [pair.js, pair.wasm]) {
        const rng = mulberry32(7 + n + d);
        const row = fillUniform(new Float32Array(n), rng);
        const w = randomArray(k, d * n, rng);
        let first: number[] | undefined;
        for (const [m, at] of [
          [1, 0],
          [8, 5],
          [8, 0],
          [7, 6],
          [32, 17],
          [32, 31],
        ] as [number, number][]) {
          const x = randomArray(k, m * n, rng);
          x.set(row, at * n);
          const out = k.alloc(m * d);
          k.matmul(out, x, w, m, n, d);
          const got = bits(out.subarray(at * d, (at + 1) * d));
          first ??= got;
          expect(got, `${k.name} m=${m} row ${at}`).toEqual(first);
        }
        perImpl.push(first as number[]);
      }
      expect(perImpl[1]).toEqual(perImpl[0]);
    }
  });

  it("rejects bad shapes, short arrays, aliasing and foreign arrays", () => {
    for (const k of [pair.js, pair.wasm]) {
      const a = k.alloc(16);
      const b = k.alloc(16);
      const c = k.alloc(16);
      expect(() => k.matmul(a, b, c, 2, 4, 5)).toThrow(InvariantError);
      expect(() => k.matmul(a, b, c, 1.5, 4, 2)).toThrow(InvariantError);
      expect(() => k.matmul(a, b, c, -1, 4, 2)).toThrow(InvariantError);
      expect(() => k.matmul(a, a, c, 2, 4, 2)).toThrow(InvariantError);
      // disjoint views of one buffer are not aliases: accepted, and computed like separate arrays
      a.set([1, -2, 3, 0.5, -1, 4, 2, -3]);
      c.set([1, 1, 1, 1, 0, 1, 0, -1]);
      k.matmul(a.subarray(8), a.subarray(0, 8), c, 2, 4, 2);
      expect(Array.from(a.subarray(8, 12))).toEqual([2.5, -2.5, 2, 7]);
      expect(Array.from(a.subarray(0, 8))).toEqual([1, -2, 3, 0.5, -1, 4, 2, -3]);
      expect(() => k.matmul(a.subarray(7), a.subarray(0, 8), c, 2, 4, 2)).toThrow(InvariantError);
      expect(() => k.matmul(new Float32Array(16), b, c, 2, 4, 2)).toThrow(InvariantError);
      const other = k === pair.js ? pair.wasm : pair.js;
      expect(() => k.matmul(a, other.alloc(16), c, 2, 4, 2)).toThrow(InvariantError);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// attention

const ATTN_SHAPES: AttnShape[] = [
  { numHeads: 4, numKvHeads: 4, headDim: 16, blockSize: 16, numKeys: 1 },
  { numHeads: 4, numKvHeads: 4, headDim: 16, blockSize: 16, numKeys: 32 },
  { numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 16, numKeys: 37 },
  { numHeads: 8, numKvHeads: 2, headDim: 12, blockSize: 4, numKeys: 50 },
  { numHeads: 6, numKvHeads: 1, headDim: 67, blockSize: 5, numKeys: 23 },
  { numHeads: 3, numKvHeads: 3, headDim: 5, blockSize: 3, numKeys: 10 },
  { numHeads: 2, numKvHeads: 1, headDim: 1, blockSize: 1, numKeys: 9 },
  { numHeads: 8, numKvHeads: 2, headDim: 64, blockSize: 16, numKeys: 300, qScale: 4 },
  { numHeads: 4, numKvHeads: 4, headDim: 16, blockSize: 8, numKeys: 40, qScale: 30 },
  // Peaky softmax: most s_t - max fall below -87, where expf flushes to 0.
  { numHeads: 2, numKvHeads: 1, headDim: 8, blockSize: 4, numKeys: 64, qScale: 300 },
  // The wasm groups heads by four (specialised for headDim 8 and 16), the rest one by one.
  { numHeads: 8, numKvHeads: 4, headDim: 8, blockSize: 16, numKeys: 130 },
  { numHeads: 8, numKvHeads: 4, headDim: 8, blockSize: 16, numKeys: 5, qScale: 40 },
  { numHeads: 6, numKvHeads: 2, headDim: 16, blockSize: 16, numKeys: 67 },
  { numHeads: 4, numKvHeads: 2, headDim: 16, blockSize: 7, numKeys: 30 },
  { numHeads: 8, numKvHeads: 4, headDim: 32, blockSize: 16, numKeys: 33 },
  { numHeads: 7, numKvHeads: 7, headDim: 44, blockSize: 3, numKeys: 11 },
  { numHeads: 12, numKvHeads: 4, headDim: 5, blockSize: 2, numKeys: 9 },
  // Too long for the grouped path's scratch: the one-head-at-a-time fallback.
  { numHeads: 4, numKvHeads: 2, headDim: 2, blockSize: 64, numKeys: 9000 },
];

describe("attention", () => {
  for (const s of ATTN_SHAPES) {
    const label = Object.entries(s)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
    it(`paged ${label} matches contiguous float64, bit-identical across js/wasm`, () => {
      const js = runAttention(pair.js, s, 99);
      const wasm = runAttention(pair.wasm, s, 99);
      expectClose(js.out, js.want, 1e-6);
      expectClose(wasm.out, wasm.want, 1e-6);
      expect(bits(wasm.out)).toEqual(bits(js.out));
    });
  }

  it("does not depend on the block layout (shuffled table = contiguous table, bit for bit)", () => {
    const s: AttnShape = { numHeads: 8, numKvHeads: 4, headDim: 8, blockSize: 16, numKeys: 130 };
    for (const k of [pair.js, pair.wasm]) {
      const rng = mulberry32(7);
      const row = s.numKvHeads * s.headDim;
      const numBlocks = Math.ceil(s.numKeys / s.blockSize);
      const rows = numBlocks * s.blockSize;
      const q = fillUniform(k.alloc(s.numHeads * s.headDim), rng, 1);
      const kc = fillUniform(new Float32Array(rows * row), rng);
      const vc = fillUniform(new Float32Array(rows * row), rng);
      const results: Float32Array[] = [];
      for (const shuffled of [false, true]) {
        const ids = Array.from({ length: numBlocks }, (_, i) =>
          shuffled ? (i * 5) % numBlocks : i,
        );
        const kCache = k.alloc(rows * row);
        const vCache = k.alloc(rows * row);
        for (let b = 0; b < numBlocks; b++) {
          const src = b * s.blockSize * row;
          const dst = (ids[b] as number) * s.blockSize * row;
          kCache.set(kc.subarray(src, src + s.blockSize * row), dst);
          vCache.set(vc.subarray(src, src + s.blockSize * row), dst);
        }
        const table = k.allocInt32(numBlocks);
        table.set(ids);
        const out = k.alloc(q.length);
        k.attention(
          out,
          q,
          kCache,
          vCache,
          table,
          s.numKeys,
          s.numHeads,
          s.numKvHeads,
          s.headDim,
          s.blockSize,
          k.alloc(s.numKeys),
        );
        results.push(out);
      }
      expect(bits(results[1] as Float32Array)).toEqual(bits(results[0] as Float32Array));
    }
  });

  it("signed zeros in q and the cache give the same bits in js and wasm", () => {
    for (const headDim of [8, 16, 6]) {
      const outs: Float32Array[] = [];
      for (const k of [pair.js, pair.wasm]) {
        const numHeads = 4;
        const numKeys = 9;
        const q = k.alloc(numHeads * headDim);
        for (let i = 0; i < q.length; i++) q[i] = i % 3 === 0 ? -0 : i % 3 === 1 ? 0 : -1;
        const kc = k.alloc(numKeys * headDim);
        const vc = k.alloc(numKeys * headDim);
        for (let i = 0; i < kc.length; i++) {
          kc[i] = i % 2 === 0 ? -0 : 0;
          vc[i] = (i % 7) - 3;
        }
        const table = k.allocInt32(numKeys);
        for (let b = 0; b < numKeys; b++) table[b] = numKeys - 1 - b;
        const out = k.alloc(q.length);
        k.attention(out, q, kc, vc, table, numKeys, numHeads, 1, headDim, 1, k.alloc(numKeys));
        outs.push(out);
      }
      expect(bits(outs[1] as Float32Array)).toEqual(bits(outs[0] as Float32Array));
    }
  });

  it("out may be q itself", () => {
    const s = ATTN_SHAPES[3] as AttnShape;
    for (const k of [pair.js, pair.wasm]) {
      const sep = runAttention(k, s, 5);
      const inPlace = runAttention(k, s, 5, true);
      expect(bits(inPlace.out)).toEqual(bits(sep.out));
    }
  });

  it("rejects bad shapes, block ids outside the cache and aliasing", () => {
    for (const k of [pair.js, pair.wasm]) {
      const q = k.alloc(8);
      const out = k.alloc(8);
      const kc = k.alloc(4 * 8);
      const vc = k.alloc(4 * 8);
      const table = k.allocInt32(2);
      const scores = k.alloc(4);
      table.set([1, 0]);
      // 2 heads of 4, one KV head, blocks of 2 rows: the cache holds 4 blocks.
      k.attention(out, q, kc, vc, table, 4, 2, 1, 4, 2, scores);
      expect(() => k.attention(out, q, kc, vc, table, 0, 2, 1, 4, 2, scores)).toThrow(
        InvariantError,
      );
      expect(() => k.attention(out, q, kc, vc, table, 4, 3, 2, 4, 2, scores)).toThrow(
        InvariantError,
      );
      expect(() => k.attention(out, q, kc, vc, table, 5, 2, 1, 4, 2, scores)).toThrow(
        InvariantError,
      );
      table[0] = 4;
      expect(() => k.attention(out, q, kc, vc, table, 4, 2, 1, 4, 2, scores)).toThrow(
        InvariantError,
      );
      table[0] = -1;
      expect(() => k.attention(out, q, kc, vc, table, 4, 2, 1, 4, 2, scores)).toThrow(
        InvariantError,
      );
      table[0] = 3;
      k.attention(out, q, kc, vc, table, 4, 2, 1, 4, 2, scores);
      expect(() => k.attention(out, q, kc, vc, table, 4, 2, 1, 4, 2, out)).toThrow(InvariantError);
      expect(() => k.attention(kc.subarray(0, 8), q, kc, vc, table, 4, 2, 1, 4, 2, scores)).toThrow(
        InvariantError,
      );
    }
  });
});

// ---------------------------------------------------------------------------------------------
// swiglu

/** float64 SwiGLU of gu (m, 2 * ff) -> (m, ff): silu(g) * u with silu(g) = g / (1 + exp(-g)). */
function naiveSwiglu(gu: Float32Array, m: number, ff: number): Float64Array {
  const out = new Float64Array(m * ff);
  for (let r = 0; r < m; r++) {
    for (let i = 0; i < ff; i++) {
      const g = gu[r * 2 * ff + i] as number;
      out[r * ff + i] = (g / (1 + Math.exp(-g))) * (gu[r * 2 * ff + ff + i] as number);
    }
  }
  return out;
}

/** Runs swiglu on a copy of `gu` in each implementation; returns [js, wasm]. */
function swigluBoth(gu: ArrayLike<number>, m: number, ff: number): [Float32Array, Float32Array] {
  const outs = [pair.js, pair.wasm].map((k) => {
    const out = k.alloc(m * ff).fill(Number.NaN);
    k.swiglu(out, copyInto(k, gu), m, ff);
    return out;
  });
  return outs as [Float32Array, Float32Array];
}

/** Bit-identical, except that NaNs (whose payload and sign wasm SIMD leaves open) need only agree. */
function expectSameBits(wasm: Float32Array, js: Float32Array): void {
  const nan = (a: Float32Array) => Array.from(a, (v) => (Number.isNaN(v) ? 0 : 1));
  expect(nan(wasm)).toEqual(nan(js));
  const clean = (a: Float32Array) => bits(a.map((v) => (Number.isNaN(v) ? 0 : v)));
  expect(clean(wasm)).toEqual(clean(js));
}

describe("swiglu", () => {
  const shapes: [number, number][] = [
    [1, 1],
    [1, 3],
    [1, 4],
    [2, 7],
    [3, 64],
    [5, 172],
    [4, 513],
    [0, 8],
    [3, 0],
  ];
  for (const [m, ff] of shapes) {
    it(`m=${m} ff=${ff} matches float64 and is bit-identical across js/wasm`, () => {
      const rng = mulberry32(500 + m * 31 + ff);
      const gu = new Float32Array(m * 2 * ff);
      for (let i = 0; i < gu.length; i++) {
        const pick = rng();
        // gates and ups: mostly O(1), some large |g| up to 90 (both expf clamps), some zeros
        gu[i] = pick < 0.1 ? (rng() < 0.5 ? 0 : -0) : (rng() * 2 - 1) * (pick < 0.4 ? 90 : 6);
      }
      const [js, wasm] = swigluBoth(gu, m, ff);
      expect(bits(wasm)).toEqual(bits(js));
      const want = naiveSwiglu(gu, m, ff);
      for (let i = 0; i < want.length; i++) {
        const w = want[i] as number;
        // 1e-6 relative; the absolute 1e-30 covers g < -88, where expf(-g) = +Infinity gives -0
        // for a true value below 1e-36.
        const err = Math.abs((js[i] as number) - w);
        expect(err, `element ${i}: got ${js[i]}, want ${w}`).toBeLessThanOrEqual(
          1e-6 * Math.abs(w) + 1e-30,
        );
      }
    });
  }

  it("edge values (±0, ±Infinity, subnormals, the expf clamps) give the same bits in js and wasm", () => {
    const gates = [
      0,
      -0,
      1e-40,
      -1e-40,
      1,
      -1,
      86.9,
      -86.9,
      87,
      -87,
      87.1,
      -87.1,
      88,
      -88,
      88.5,
      -88.5,
      88.8,
      -88.8,
      89,
      -89,
      90,
      -90,
      1000,
      -1000,
      3.4e38,
      -3.4e38,
      Number.POSITIVE_INFINITY,
      Number.NEGATIVE_INFINITY,
      Number.NaN,
    ];
    const ups = [1, -1, 0, -0, 2.5, -1e-40, 3e38];
    // Row r: every gate = gates[r], so each value runs through the SIMD lanes and the ff % 4 tail.
    const ff = 7;
    const m = gates.length;
    const gu = new Float32Array(m * 2 * ff);
    for (let r = 0; r < m; r++) {
      for (let i = 0; i < ff; i++) {
        gu[r * 2 * ff + i] = gates[r] as number;
        gu[r * 2 * ff + ff + i] = ups[(i + r) % ups.length] as number;
      }
    }
    const [js, wasm] = swigluBoth(gu, m, ff);
    expectSameBits(wasm, js);
    // Spot checks of the definition: silu(-0) * 1 = -0, silu(-90) = -90 / Infinity = -0.
    expect(Object.is(js[1 * ff + 6], -0)).toBe(true); // gate -0, up ups[0] = 1
    expect(Object.is(js[21 * ff + 0], -0)).toBe(true); // gate -90, up ups[0] = 1
    expect(js[20 * ff + 1]).toBe(90); // gate 90: expf(-90) = 0, up ups[0] = 1
  });

  it("a row's result does not depend on the rows around it; unaligned views", () => {
    const [m, ff] = [6, 37];
    const rng = mulberry32(77);
    const gu = fillUniform(new Float32Array(m * 2 * ff), rng, 12);
    for (const k of [pair.js, pair.wasm]) {
      const all = k.alloc(m * ff);
      k.swiglu(all, copyInto(k, gu), m, ff);
      const big = k.alloc(ff + 2);
      const one = big.subarray(1, 1 + ff);
      const guv = k.alloc(2 * ff + 1).subarray(1);
      guv.set(gu.subarray(4 * 2 * ff, 5 * 2 * ff));
      k.swiglu(one, guv, 1, ff);
      expect(bits(one)).toEqual(bits(all.subarray(4 * ff, 5 * ff)));
      expect(big[0]).toBe(0);
      expect(big[ff + 1]).toBe(0);
    }
  });

  it("rejects bad shapes, short arrays, aliasing and foreign arrays", () => {
    for (const k of [pair.js, pair.wasm]) {
      const out = k.alloc(8);
      const gu = k.alloc(16);
      k.swiglu(out, gu, 2, 4);
      expect(() => k.swiglu(out, gu, 3, 4)).toThrow(InvariantError);
      expect(() => k.swiglu(out, gu.subarray(1), 2, 4)).toThrow(InvariantError);
      expect(() => k.swiglu(out, gu, 1.5, 4)).toThrow(InvariantError);
      expect(() => k.swiglu(out, gu, 2, -4)).toThrow(InvariantError);
      // disjoint views of one buffer are not aliases: accepted, and computed like separate arrays
      const gate = [1, 2, -1, 0.5];
      const up = [2, 1, 3, -4];
      gu.set([...gate, ...up]);
      k.swiglu(gu.subarray(8), gu.subarray(0, 8), 1, 4);
      gate.forEach((g, i) => {
        expect(gu[8 + i]).toBeCloseTo((g / (1 + Math.exp(-g))) * (up[i] as number), 5);
      });
      expect(() => k.swiglu(gu.subarray(7), gu.subarray(0, 8), 1, 4)).toThrow(InvariantError);
      expect(() => k.swiglu(new Float32Array(8), gu, 2, 4)).toThrow(InvariantError);
      const other = k === pair.js ? pair.wasm : pair.js;
      expect(() => k.swiglu(out, other.alloc(16), 2, 4)).toThrow(InvariantError);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// exp

describe("expf", () => {
  it("is bit-identical in js and wasm and within 2 ulp-ish of Math.exp", () => {
    const bytes = readFileSync(WASM_KERNELS_URL);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), WASM_KERNEL_IMPORTS);
    const wasmExpf = instance.exports.expf as (x: number) => number;
    const rng = mulberry32(3);
    const xs = [0, -0, 1, -1, 0.5, -87, -86.99, -87.01, 88, 88.5, -1000, Number.NEGATIVE_INFINITY];
    for (let i = 0; i < 20000; i++) xs.push(Math.fround(-90 + rng() * 180));
    for (let i = 0; i < 20000; i++) xs.push(Math.fround(-(rng() ** 3) * 20));
    let maxRel = 0;
    for (const x0 of xs) {
      const x = Math.fround(x0);
      const a = jsExpf(x);
      const b = wasmExpf(x);
      expect(Object.is(a, b), `expf(${x}): js ${a} wasm ${b}`).toBe(true);
      if (x >= -87 && x <= 88) {
        maxRel = Math.max(maxRel, Math.abs(a - Math.exp(x)) / Math.exp(x));
      }
    }
    expect(maxRel).toBeLessThan(2.5e-7);
    expect(Number.isNaN(jsExpf(Number.NaN))).toBe(true);
    expect(Number.isNaN(wasmExpf(Number.NaN))).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------
// arena

describe("arena", () => {
  for (const kind of ["js", "wasm"] as const) {
    it(`${kind}: counts 16-byte granules, throws KernelMemoryError past capacity`, async () => {
      const k = await createKernels(kind, 1024);
      expect(k.name).toBe(kind);
      expect(k.capacityBytes).toBe(1024);
      expect(k.usedBytes).toBe(0);
      const a = k.alloc(10);
      expect(a.length).toBe(10);
      expect(Array.from(a)).toEqual(new Array(10).fill(0));
      expect(k.usedBytes).toBe(48);
      const b = k.allocInt32(3);
      expect(b).toBeInstanceOf(Int32Array);
      expect(k.usedBytes).toBe(64);
      expect(k.canAlloc(960)).toBe(true);
      expect(k.canAlloc(961)).toBe(false);
      expect(() => k.alloc(241)).toThrow(KernelMemoryError);
      expect(k.usedBytes).toBe(64);
      expect(k.alloc(240).length).toBe(240);
      expect(k.usedBytes).toBe(1024);
      expect(k.canAlloc(0)).toBe(true);
      expect(k.canAlloc(1)).toBe(false);
      expect(() => k.allocInt32(1)).toThrow(KernelMemoryError);
      expect(k.alloc(0).length).toBe(0);
      expect(() => k.alloc(-1)).toThrow(InvariantError);
      if (kind === "wasm") {
        // Views are 16-byte aligned and never detach (the memory never grows after creation).
        expect(a.byteOffset % 16).toBe(0);
        expect(b.byteOffset % 16).toBe(0);
        expect(a.byteLength).toBe(40);
      }
    });
  }

  it("wasm: one Kernels object per instance, capacity checked against 4 GiB", () => {
    const bytes = readFileSync(WASM_KERNELS_URL);
    const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), WASM_KERNEL_IMPORTS);
    const k = createWasmKernels(instance, 1 << 20);
    expect(k.capacityBytes).toBe(1 << 20);
    expect(() => createWasmKernels(instance, 1 << 20)).toThrow(InvariantError);
    const other = new WebAssembly.Instance(new WebAssembly.Module(bytes), WASM_KERNEL_IMPORTS);
    expect(() => createWasmKernels(other, 2 ** 32)).toThrow(KernelMemoryError);
    expect(() => createWasmKernels({ exports: {} }, 1024)).toThrow(InvariantError);
  });
});

// ---------------------------------------------------------------------------------------------
// build

describe("wasm/kernels.wasm and wasm/kernels-relaxed.wasm", () => {
  it("the host runs the relaxed build exactly where it compiles relaxed SIMD", () => {
    // Node 20 compiles relaxed SIMD only with the V8 flag; from Node 21 (V8 11.8) it is on
    const major = Number(process.versions.node.split(".")[0]);
    const relaxed = process.execArgv.includes("--experimental-wasm-relaxed-simd") || major >= 21;
    expect(WASM_BUILD).toBe(relaxed ? "relaxed-simd" : "simd128");
    expect(
      WASM_KERNELS_URL.pathname.endsWith(relaxed ? "kernels-relaxed.wasm" : "kernels.wasm"),
    ).toBe(true);
  });

  it("are up to date with wasm/kernels.ts (rebuilt with the build:wasm flags)", () => {
    const pkg = JSON.parse(readFileSync(join(REPO, "package.json"), "utf8")) as {
      scripts: Record<string, string>;
    };
    const builds = (pkg.scripts["build:wasm"] as string)
      .split("&&")
      .map((c) => c.trim().split(/\s+/));
    expect(builds.map((args) => args[args.indexOf("-o") + 1])).toEqual([
      "wasm/kernels.wasm",
      "wasm/kernels-relaxed.wasm",
    ]);
    expect(builds[1]?.[builds[1].indexOf("--enable") + 1]).toBe("simd,relaxed-simd");
    const dir = mkdtempSync(join(tmpdir(), "kernels-wasm-"));
    try {
      for (const args of builds) {
        expect(args[0]).toBe("asc");
        const o = args.indexOf("-o");
        const out = args[o + 1] as string;
        const target = join(dir, "kernels.wasm");
        execFileSync(
          join(REPO, "node_modules/.bin/asc"),
          args.map((a, i) => (i === o + 1 ? target : a)).slice(1),
          {
            cwd: REPO,
          },
        );
        const fresh = readFileSync(target);
        const committed = readFileSync(join(REPO, out));
        expect(
          Buffer.compare(fresh, committed),
          `${out} is stale: run \`npm run build:wasm\``,
        ).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
