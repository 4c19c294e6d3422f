/**
 * The quantised matmul (`matmulQ`): JS and wasm bit-identical, both within the quantisation error
 * bound of a float64 product of the dequantised weights and the unquantised activations, rows
 * independent of the batch around them, and argument checks.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { loadWasmKernels, WASM_BUILD } from "../../hosts/node-kernels.ts";
import { InvariantError } from "../../shared/assert.ts";
import { f16ToF32, f32ToF16, GgmlType } from "../../shared/gguf/gguf.ts";
import type { Kernels } from "../../shared/model/kernels.ts";
import { createJsKernels } from "../../shared/model/kernels-js.ts";
import {
  actRowBytes,
  blockValues,
  dequantizeRow,
  Q6_K_LANES,
  q6kValue,
  rowBytes,
  type WeightType,
} from "../../shared/model/quant.ts";
import { mulberry32 } from "../../shared/random.ts";
import { packQ6kLanes, QUANTISED_TYPES, randomQuantWeights } from "../helpers/quant.ts";

const ARENA = 16 << 20;
let js: Kernels;
let wasm: Kernels;

beforeAll(async () => {
  js = createJsKernels(ARENA);
  wasm = await loadWasmKernels(ARENA);
});

const Q6_K = GgmlType.Q6_K;

/** A Q6_K_LANES copy of Q6_K weights. */
function packed(w: Uint8Array): Uint8Array {
  const p = Uint8Array.from(w);
  packQ6kLanes(p);
  return p;
}

function bits(a: Float32Array): number[] {
  return Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
}

/** Runs matmulQ on `k` with copies of the inputs; returns out (m, ldo). */
function run(
  k: Kernels,
  type: WeightType,
  x: Float32Array,
  w: Uint8Array,
  m: number,
  n: number,
  d: number,
  ldo = d,
): Float32Array {
  const xs = k.alloc(x.length);
  xs.set(x);
  const ws = k.allocBytes(w.length);
  ws.set(w);
  const out = k.alloc(m * ldo);
  out.fill(-7);
  k.matmulQ(out, ldo, xs, ws, type, m, n, d, k.allocBytes(m * actRowBytes(type, n)));
  return Float32Array.from(out);
}

/**
 * float64 sum_k w[j, k] x[i, k] with w dequantised, and the bound on |ours - it|: the activation
 * rounding (half a step of each block's scale, plus the f16 rounding of the Q8_0 scale; 2^-11
 * relative for f16) times |w|, plus f32 accumulation error n 2^-23 sum |w x|.
 */
function reference(
  type: WeightType,
  x: Float32Array,
  w: Uint8Array,
  m: number,
  n: number,
  d: number,
) {
  const want = new Float64Array(m * d);
  const tol = new Float64Array(m * d);
  const row = new Float32Array(n);
  const qk = blockValues(type) === 256 ? 256 : blockValues(type) === 32 ? 32 : 1; // activation blocks
  const err = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let b = 0; b < n / qk; b++) {
      let amax = 0;
      for (let k = b * qk; k < (b + 1) * qk; k++)
        amax = Math.max(amax, Math.abs(x[i * n + k] as number));
      for (let k = b * qk; k < (b + 1) * qk; k++) {
        const v = Math.abs(x[i * n + k] as number);
        err[i * n + k] =
          type === GgmlType.F16 ? v * 2 ** -11 : (0.5 + 127 * 2 ** -11) * (amax / 127);
      }
    }
  }
  for (let j = 0; j < d; j++) {
    dequantizeRow(type, w, j * rowBytes(type, n), n, row, 0);
    for (let i = 0; i < m; i++) {
      let s = 0;
      let e = 0;
      let mag = 0;
      for (let k = 0; k < n; k++) {
        const wk = row[k] as number;
        const xk = x[i * n + k] as number;
        s += wk * xk;
        e += Math.abs(wk) * (err[i * n + k] as number);
        mag += Math.abs(wk * xk);
      }
      want[i * d + j] = s;
      tol[i * d + j] = e + n * 2 ** -23 * mag + 1e-30;
    }
  }
  return { want, tol };
}

describe("matmulQ", () => {
  for (const [name, type] of QUANTISED_TYPES) {
    // the last shape leaves blocks after the wasm's groups of four (and an F16 tail after 8s)
    const odd =
      type === GgmlType.F16
        ? 261
        : type === GgmlType.Q8_0 || type === GgmlType.Q4_0 || type === GgmlType.Q4_1
          ? 224
          : 768;
    for (const [m, n, d] of [
      [1, 256, 7],
      [1, 512, 37], // single stream: four rows a call from the quarters (nine apart), a tail row
      [3, 512, 17],
      [8, 256, 33],
      [2, odd, 9],
      [1, odd, 5],
    ] as const) {
      it(`${name} (${m}, ${n}) @ (${d}, ${n})^T: js = wasm bit for bit, within the bound of float64`, () => {
        const rng = mulberry32(m * 1000 + n + d + type);
        const x = Float32Array.from({ length: m * n }, () => (rng() * 2 - 1) * 3);
        x.fill(0, 0, 256); // an all-zero block: scale 0, quants 0
        const w = randomQuantWeights(type, n, d, rng);
        const a = run(js, type, x, w, m, n, d);
        const b = run(wasm, type, x, w, m, n, d);
        expect(bits(a)).toEqual(bits(b));
        const { want, tol } = reference(type, x, w, m, n, d);
        let worst = 0;
        for (let i = 0; i < m * d; i++) {
          const excess = Math.abs((a[i] as number) - (want[i] as number)) / (tol[i] as number);
          worst = Math.max(worst, excess);
        }
        expect(worst, "largest error / bound").toBeLessThanOrEqual(1);
      });
    }

    it(`${name}: a row does not depend on the batch around it; ldo > d leaves other columns`, () => {
      const n = 256;
      const d = 5;
      const m = 6;
      const rng = mulberry32(77 + type);
      const x = Float32Array.from({ length: m * n }, () => rng() * 2 - 1);
      const w = randomQuantWeights(type, n, d, rng);
      for (const k of [js, wasm]) {
        const batch = run(k, type, x, w, m, n, d, d + 3);
        for (let i = 0; i < m; i++) {
          const one = run(k, type, x.subarray(i * n, (i + 1) * n), w, 1, n, d);
          expect(bits(batch.subarray(i * (d + 3), i * (d + 3) + d))).toEqual(bits(one));
          expect(Array.from(batch.subarray(i * (d + 3) + d, (i + 1) * (d + 3)))).toEqual([
            -7, -7, -7,
          ]);
        }
        // unaligned weight view (odd byte offset): same bits
        const ws = k.allocBytes(w.length + 1).subarray(1);
        ws.set(w);
        const xs = k.alloc(n);
        xs.set(x.subarray(0, n));
        const out = k.alloc(d);
        k.matmulQ(out, d, xs, ws, type, 1, n, d, k.allocBytes(actRowBytes(type, n)));
        expect(bits(out)).toEqual(bits(batch.subarray(0, d)));
      }
    });
  }

  // rows long enough that the prepared rows leave room for the side data of 2-3 activation rows:
  // Q4_0 (relaxed build) 119808 bytes and 3328 a row's block sums, Q8_0 87040 and 20480 a row's
  // widened q, of the 128 KiB unpack area
  for (const [type, n] of [
    [GgmlType.Q4_0, 26624],
    [GgmlType.Q8_0, 10240],
  ] as const) {
    it(`${type === GgmlType.Q4_0 ? "Q4_0" : "Q8_0"} rows of ${n}: activation rows in chunks; js = wasm bit for bit`, () => {
      const [m, d] = [7, 5];
      const rng = mulberry32(n);
      const x = Float32Array.from({ length: m * n }, () => rng() * 2 - 1);
      const w = randomQuantWeights(type, n, d, rng);
      expect(bits(run(wasm, type, x, w, m, n, d))).toEqual(bits(run(js, type, x, w, m, n, d)));
    });
  }

  it("quants at their limits against activations at +-127 (int16 lanes at their bounds): js = wasm bit for bit", () => {
    const n = 256;
    const d = 9;
    // activation rows of +-1: every block's q at +-127 (all +, all -, pairs of each sign, mixed)
    const signs = [
      () => 1,
      () => -1,
      (k: number) => ((k >> 1) & 1 ? 1 : -1),
      (k: number) => (k & 1 ? 1 : -1),
    ];
    const x = Float32Array.from({ length: signs.length * n }, (_, i) =>
      (signs[(i / n) | 0] as (k: number) => number)(i % n),
    );
    const q8 = new Uint8Array(d * rowBytes(GgmlType.Q8_0, n));
    for (let b = 0; b < q8.length; b += 34) {
      q8[b + 1] = 0x3c; // d = 1
      q8.fill((b / 34) % 3 === 0 ? 0x80 : (b / 34) % 3 === 1 ? 0x7f : 0x81, b + 2, b + 34); // -128, 127, -127
    }
    const q6 = new Uint8Array(d * rowBytes(Q6_K, n)).fill(0xff); // every quant 63
    for (let b = 0; b < q6.length; b += 210) {
      for (let g = 0; g < 16; g++) q6[b + 192 + g] = g & 1 ? 0x80 : 0x7f; // scales -128, 127
      q6[b + 208] = 0;
      q6[b + 209] = 0x3c;
    }
    const cases: [WeightType, Uint8Array][] = [
      [GgmlType.Q8_0, q8],
      [Q6_K, q6],
    ];
    if (wasm.residentType(Q6_K) === Q6_K_LANES) cases.push([Q6_K_LANES, packed(q6)]);
    for (const [type, w] of cases) {
      const want = type === Q6_K_LANES ? Q6_K : type;
      for (const m of [1, 4]) {
        const a = run(js, want, x, want === type ? w : q6, m, n, d);
        expect(bits(run(wasm, type, x, w, m, n, d)), `type ${type}, m ${m}`).toEqual(bits(a));
      }
    }
  });

  it("weight scales of every finite class of half (subnormal, +-0, largest): js = wasm bit for bit", () => {
    // byte offsets of the f16 scale fields in a block, and the halves written there in turn
    const fields: [WeightType, number[]][] = [
      [GgmlType.Q8_0, [0]],
      [GgmlType.Q4_0, [0]],
      [GgmlType.Q4_1, [0, 2]],
      [GgmlType.Q4_K, [0, 2]],
      [GgmlType.Q5_K, [0, 2]],
      [GgmlType.Q6_K, [208]],
    ];
    const halves = [0x0001, 0x03ff, 0x0400, 0x8001, 0x0000, 0x8000, 0x7bff, 0xfbff, 0x3c00, 0x1234];
    const n = 512;
    const d = 6;
    for (const [type, offs] of fields) {
      const rng = mulberry32(900 + type);
      const w = randomQuantWeights(type, n, d, rng);
      const bb = rowBytes(type, blockValues(type));
      let h = 0;
      for (let p = 0; p < w.length; p += bb) {
        for (const f of offs) {
          const v = halves[h++ % halves.length] as number;
          w[p + f] = v & 0xff;
          w[p + f + 1] = v >> 8;
        }
      }
      for (const m of [1, 4]) {
        const x = Float32Array.from({ length: m * n }, () => rng() * 2 - 1);
        expect(bits(run(wasm, type, x, w, m, n, d)), `type ${type}, m ${m}`).toEqual(
          bits(run(js, type, x, w, m, n, d)),
        );
      }
    }
  });

  it("F16 activations round to the nearest half like f32ToF16 (subnormals, ties, overflow, -0)", () => {
    const edge = [
      0,
      -0,
      1,
      -1,
      65504,
      65519.99,
      2 ** -14,
      2 ** -14 * 0.99,
      2 ** -24,
      2 ** -25,
      2 ** -25 * 1.01,
      3 * 2 ** -25,
      1 + 2 ** -11,
      1 + 3 * 2 ** -11,
      0.1,
      -0.3,
      1e-9,
      5e-8,
      -6e-5,
      2049,
      2051,
      4097,
    ];
    const n = edge.length + (8 - (edge.length % 8)) + 3; // a tail after the groups of 8 and 4
    const x = new Float32Array(n);
    x.set(edge);
    x.set([1 + 2 ** -11, -65504, 2 ** -25], n - 3);
    // one-hot weight rows: out[j] = x[j] * 1, the rounded activation itself
    const w = new Uint8Array(n * rowBytes(GgmlType.F16, n));
    for (let j = 0; j < n; j++) w[(j * n + j) * 2 + 1] = 0x3c; // half 1.0 = 0x3c00
    const want = Array.from(x, (v) => f16ToF32(f32ToF16(v)));
    for (const m of [1, 2]) {
      const xs = new Float32Array(m * n);
      for (let i = 0; i < m; i++) xs.set(x, i * n);
      const a = run(js, GgmlType.F16, xs, w, m, n, n);
      const b = run(wasm, GgmlType.F16, xs, w, m, n, n);
      expect(bits(a)).toEqual(bits(b));
      expect(Array.from(a.subarray(0, n))).toEqual(want.map((v) => Math.fround(v) + 0)); // a sum from +0: -0 gives +0
    }
    // from 65520 on a half is infinite (alone in its row: inf * 0 would be NaN)
    for (const v of [65520, -65520, 1e6, Number.POSITIVE_INFINITY]) {
      const one = new Uint8Array(8);
      one[1] = 0x3c;
      const a = run(js, GgmlType.F16, Float32Array.from([v, 0, 0, 0]), one, 1, 4, 1);
      const b = run(wasm, GgmlType.F16, Float32Array.from([v, 0, 0, 0]), one, 1, 4, 1);
      expect([a[0], b[0]]).toEqual([Math.sign(v) * Number.POSITIVE_INFINITY, a[0]]);
    }
  });

  it("rejects F32 and unknown types, partial blocks, short arrays, aliasing and foreign arrays", () => {
    for (const k of [js, wasm]) {
      const x = k.alloc(512);
      const w = k.allocBytes(4 * rowBytes(GgmlType.Q4_K, 256));
      const out = k.alloc(64);
      const s = k.allocBytes(2048);
      const q4k = GgmlType.Q4_K;
      k.matmulQ(out, 4, x, w, q4k, 2, 256, 4, s);
      expect(() => k.matmulQ(out, 4, x, w, GgmlType.F32 as WeightType, 2, 256, 4, s)).toThrow(
        InvariantError,
      );
      expect(() => k.matmulQ(out, 4, x, w, 10 as WeightType, 2, 256, 4, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(out, 4, x, w, q4k, 2, 128, 4, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(out, 3, x, w, q4k, 2, 256, 4, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(out, 4, x, w, q4k, 2, 256, 5, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(out, 4, x, w, q4k, 3, 256, 4, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(out, 4, x, w, q4k, 2, 256, 4, s.subarray(0, 500))).toThrow(
        InvariantError,
      );
      const xb = new Uint8Array(x.buffer, x.byteOffset, 2048);
      expect(() => k.matmulQ(out, 4, x, w, q4k, 2, 256, 4, xb)).toThrow(InvariantError);
      expect(() => k.matmulQ(x.subarray(0, 8), 4, x, w, q4k, 2, 256, 4, s)).toThrow(InvariantError);
      expect(() => k.matmulQ(new Float32Array(8), 4, x, w, q4k, 2, 256, 4, s)).toThrow(
        InvariantError,
      );
    }
  });
});

describe("Q6_K_LANES: Q6_K in lane order", () => {
  it("is laid out as quant.ts documents it and dequantises to Q6_K's values bit for bit", () => {
    const rng = mulberry32(6);
    const w = randomQuantWeights(Q6_K, 512, 3, rng);
    const l = packed(w);
    for (let b = 0; b < l.length; b += 210) {
      expect(Array.from(l.subarray(b + 192, b + 210))).toEqual(
        Array.from(w.subarray(b + 192, b + 210)),
      );
      for (let p = 0; p < 4; p++) {
        for (let i = 0; i < 16; i++) {
          // lane 64 p + 16 k + i holds value 16 (i >> 1) + 128 (k >> 1) + 4 p + 2 (k & 1) + (i & 1)
          const value = (k: number) =>
            q6kValue(w, b, 16 * (i >> 1) + 128 * (k >> 1) + 4 * p + 2 * (k & 1) + (i & 1));
          let q3 = 0;
          for (let k = 0; k < 3; k++) {
            const byte = l[b + 48 * p + 16 * k + i] as number;
            expect(byte & 63).toBe(value(k));
            q3 |= (byte >> 6) << (2 * k);
          }
          expect(q3).toBe(value(3));
        }
      }
    }
    const a = new Float32Array(3 * 512);
    const c = new Float32Array(3 * 512);
    for (let r = 0; r < 3; r++) {
      dequantizeRow(Q6_K, w, r * 420, 512, a, r * 512);
      dequantizeRow(Q6_K_LANES, l, r * 420, 512, c, r * 512);
    }
    expect(bits(c)).toEqual(bits(a));
  });

  it(`the wasm build (${WASM_BUILD}) keeps Q6_K ${WASM_BUILD === "relaxed-simd" ? "in lane order" : "as GGUF stores it"}, every other type as it is`, () => {
    const lanes = WASM_BUILD === "relaxed-simd";
    expect(wasm.residentType(Q6_K)).toBe(lanes ? Q6_K_LANES : Q6_K);
    expect(js.residentType(Q6_K)).toBe(Q6_K);
    for (const [, type] of QUANTISED_TYPES) {
      if (type !== Q6_K) expect(wasm.residentType(type)).toBe(type);
    }
    if (!lanes) {
      const w = randomQuantWeights(Q6_K, 256, 1, mulberry32(1));
      expect(() => run(wasm, Q6_K_LANES, new Float32Array(256), w, 1, 256, 1)).toThrow(
        InvariantError,
      );
    }
  });

  it("toResident packs Q6_K as packQ6kLanes, bit for bit (the wasm build's own packing), and leaves other types", () => {
    const w = randomQuantWeights(Q6_K, 512, 9, mulberry32(9));
    w.fill(255, 0, 210); // every bit set, then every bit clear
    w.fill(0, 210, 420);
    for (const k of [js, wasm]) {
      const data = k.allocBytes(w.length);
      data.set(w);
      k.toResident(Q6_K, data);
      expect(Array.from(data)).toEqual(Array.from(k.residentType(Q6_K) === Q6_K ? w : packed(w)));
      const q4k = randomQuantWeights(GgmlType.Q4_K, 256, 2, mulberry32(4));
      const other = k.allocBytes(q4k.length);
      other.set(q4k);
      k.toResident(GgmlType.Q4_K, other);
      expect(Array.from(other)).toEqual(Array.from(q4k));
    }
  });

  // a 128 KiB unpack area: rows of 58368 values are too long for the single-stream widened row
  // and for four unpacked rows (both fall back to one row at a time, 512 blocks a chunk)
  for (const [m, n, d] of [
    [1, 256, 7],
    [1, 512, 37],
    [1, 768, 5],
    [2, 768, 9],
    [3, 512, 17],
    [8, 256, 33],
    [32, 512, 6],
    [1, 58368, 3],
    [2, 58368, 5],
    [1, 131328, 2], // 513 blocks: the long-row dot's partials in two chunks
  ] as const) {
    it(`(${m}, ${n}) @ (${d}, ${n})^T: Q6_K on js = lane order on js and on wasm's resident type, bit for bit`, () => {
      const rng = mulberry32(m * 100 + d + n);
      const x = Float32Array.from({ length: m * n }, () => (rng() * 2 - 1) * 3);
      x.fill(0, 0, 256);
      const w = randomQuantWeights(Q6_K, n, d, rng);
      const l = packed(w);
      const want = bits(run(js, Q6_K, x, w, m, n, d));
      expect(bits(run(js, Q6_K_LANES, x, l, m, n, d))).toEqual(want);
      const resident = wasm.residentType(Q6_K);
      expect(bits(run(wasm, resident, x, resident === Q6_K_LANES ? l : w, m, n, d))).toEqual(want);
    });
  }
});
