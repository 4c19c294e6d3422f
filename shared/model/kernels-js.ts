/**
 * Plain-JS kernels: the reference `Kernels` implementation and the fallback where WebAssembly is
 * unavailable. Owns the JS arena (separate typed arrays counted against a fixed capacity), the
 * argument checks shared with the wasm adapter, and an f32 mirror of wasm/kernels.ts.
 *
 * Bit-exactness: every arithmetic step is rounded to f32 with `Math.fround`, in exactly the order
 * wasm/kernels.ts uses (see its header), so JS and wasm kernels give bit-identical outputs. A
 * product of two f32 values is exact in f64 and f64 has more than 2 * 24 + 2 bits, so rounding an
 * f64 add, mul, div or sqrt of f32 operands to f32 equals the f32 operation.
 */

import { InvariantError } from "../assert.ts";
import { KernelMemoryError, type Kernels } from "./kernels.ts";
import { checkMatmulQ, type MatmulQArgs, matmulQJs } from "./kernels-quant-js.ts";

const fr = Math.fround;

export type MatmulArgs = Parameters<Kernels["matmul"]>;
export type AttentionArgs = Parameters<Kernels["attention"]>;
export type SwigluArgs = Parameters<Kernels["swiglu"]>;
type View = Float32Array | Int32Array | Uint8Array;

/** `numBytes` rounded up to the 16-byte allocation granule of both arenas. */
export function roundAllocBytes(numBytes: number): number {
  return Math.ceil(numBytes / 16) * 16;
}

/** Throws unless `n` is a non-negative safe integer. */
export function checkCount(n: number, what: string): void {
  if (!(Number.isSafeInteger(n) && n >= 0)) {
    throw new InvariantError(`${what} must be a non-negative integer, got ${n}`);
  }
}

/** Whether byte ranges [a, a + aBytes) and [b, b + bBytes) share a byte (empty ranges never do). */
export function rangesOverlap(a: number, aBytes: number, b: number, bBytes: number): boolean {
  return aBytes > 0 && bBytes > 0 && a < b + bBytes && b < a + aBytes;
}

/** Whether the first `aLen` elements of `a` and the first `bLen` of `b` share memory. */
function overlaps(a: View, aLen: number, b: View, bLen: number): boolean {
  return a.buffer === b.buffer && rangesOverlap(a.byteOffset, aLen * 4, b.byteOffset, bLen * 4);
}

/** Shape and aliasing checks of `matmul`, O(1), run on every call by both implementations. */
export function checkMatmul(...[out, x, w, m, n, d]: MatmulArgs): void {
  // Messages are built only on failure.
  if (!((m | 0) === m && (n | 0) === n && (d | 0) === d && (m | n | d) >= 0)) {
    throw new InvariantError(`matmul: bad shape m=${m} n=${n} d=${d}`);
  }
  if (!(out.length >= m * d && x.length >= m * n && w.length >= d * n)) {
    throw new InvariantError(
      `matmul: arrays too short for m=${m} n=${n} d=${d} ` +
        `(out ${out.length}, x ${x.length}, w ${w.length})`,
    );
  }
  if (overlaps(out, m * d, x, m * n) || overlaps(out, m * d, w, d * n)) {
    throw new InvariantError("matmul: out must not alias x or w");
  }
}

/** Shape and aliasing checks of `swiglu`, O(1), run on every call by both implementations. */
export function checkSwiglu(...[out, gu, m, ff]: SwigluArgs): void {
  if (!((m | 0) === m && (ff | 0) === ff && (m | ff) >= 0)) {
    throw new InvariantError(`swiglu: bad shape m=${m} ff=${ff}`);
  }
  if (!(out.length >= m * ff && gu.length >= 2 * m * ff)) {
    throw new InvariantError(`swiglu: arrays too short for m=${m} ff=${ff}`);
  }
  if (overlaps(out, m * ff, gu, 2 * m * ff)) throw new InvariantError("swiglu: out aliases gu");
}

/**
 * Shape, block-table and aliasing checks of `attention`, run on every call by both
 * implementations. O(numKeys / blockSize): every block id is checked against the cache size.
 */
export function checkAttention(
  out: Float32Array,
  q: Float32Array,
  kCache: Float32Array,
  vCache: Float32Array,
  table: Int32Array,
  numKeys: number,
  numHeads: number,
  numKvHeads: number,
  headDim: number,
  blockSize: number,
  scores: Float32Array,
): void {
  // Written without closures or temporary arrays: this runs once per layer and sequence.
  if (
    !(
      isPositiveInt(numKeys) &&
      isPositiveInt(numHeads) &&
      isPositiveInt(numKvHeads) &&
      isPositiveInt(headDim) &&
      isPositiveInt(blockSize) &&
      numHeads % numKvHeads === 0
    )
  ) {
    throw new InvariantError(
      `attention: bad shape numKeys=${numKeys} numHeads=${numHeads} numKvHeads=${numKvHeads} ` +
        `headDim=${headDim} blockSize=${blockSize}`,
    );
  }
  const qLen = numHeads * headDim;
  const numBlocks = Math.ceil(numKeys / blockSize);
  if (q.length < qLen || out.length < qLen || scores.length < numKeys || table.length < numBlocks) {
    throw new InvariantError("attention: q, out, scores or blockTable too short");
  }
  const blockFloats = blockSize * numKvHeads * headDim;
  const cacheBlocks = Math.floor(Math.min(kCache.length, vCache.length) / blockFloats);
  for (let b = 0; b < numBlocks; b++) {
    const id = table[b] as number;
    if (!(id >= 0 && id < cacheBlocks)) {
      throw new InvariantError(`attention: block id ${id} (table entry ${b}) outside the cache`);
    }
  }
  // out may be q itself; otherwise out and scores overlap nothing.
  const kLen = kCache.length;
  const vLen = vCache.length;
  if (
    (kCache !== q && overlaps(out, qLen, kCache, kLen)) ||
    (vCache !== q && overlaps(out, qLen, vCache, vLen)) ||
    overlaps(out, qLen, table, numBlocks) ||
    (out !== q && overlaps(out, qLen, q, qLen)) ||
    overlaps(scores, numKeys, kCache, kLen) ||
    overlaps(scores, numKeys, vCache, vLen) ||
    overlaps(scores, numKeys, table, numBlocks) ||
    overlaps(scores, numKeys, q, qLen) ||
    overlaps(out, qLen, scores, numKeys)
  ) {
    throw new InvariantError("attention: out or scores aliases another argument");
  }
}

function isPositiveInt(v: number): boolean {
  return (v | 0) === v && v >= 1;
}

// -----------------------------------------------------------------------------------------------
// exp (mirror of `expf` in wasm/kernels.ts)

const LOG2E = fr(Math.LOG2E);
const LN2_HI = fr(0.693359375);
const LN2_LO = fr(-2.1219444e-4);
const P0 = fr(1.98756915e-4);
const P1 = fr(1.3981999507e-3);
const P2 = fr(8.3334519073e-3);
const P3 = fr(4.1665795894e-2);
const P4 = fr(1.6666665459e-1);
const P5 = fr(5.0000001201e-1);

/** POW2[n + 126] = 2^n for n in [-126, 127] (exact: repeated doubling and halving of 1). */
const POW2 = new Float64Array(254);
POW2[126] = 1;
for (let n = 1; n <= 127; n++) POW2[126 + n] = (POW2[125 + n] as number) * 2;
for (let n = 1; n <= 126; n++) POW2[126 - n] = (POW2[127 - n] as number) / 2;

/**
 * exp(x) in f32, bit-identical to `expf` in wasm/kernels.ts (Cephes expf, about 1 ulp). Returns 0
 * below -87 and +Infinity above 88. `x` must be an f32 value.
 */
export function expf(x: number): number {
  if (!(x >= -87)) return x < -87 ? 0 : x; // below range: 0; NaN: NaN
  if (x > 88) return Number.POSITIVE_INFINITY;
  const n = Math.floor(fr(fr(x * LOG2E) + 0.5));
  let r = fr(x - fr(n * LN2_HI));
  r = fr(r - fr(n * LN2_LO));
  const z = fr(r * r);
  let p = fr(fr(P0 * r) + P1);
  p = fr(fr(p * r) + P2);
  p = fr(fr(p * r) + P3);
  p = fr(fr(p * r) + P4);
  p = fr(fr(p * r) + P5);
  p = fr(fr(fr(p * z) + r) + 1);
  return fr(p * (POW2[n + 126] as number));
}

// -----------------------------------------------------------------------------------------------
// matmul, swiglu and attention (mirrors of wasm/kernels.ts)

/** dot(a[ao..ao+n), b[bo..bo+n)): four lane sums (k mod 4), (l0 + l1) + (l2 + l3), then tail. */
function dot(a: Float32Array, ao: number, b: Float32Array, bo: number, n: number): number {
  const n4 = n & ~3;
  let a0 = 0;
  let a1 = 0;
  let a2 = 0;
  let a3 = 0;
  for (let k = 0; k < n4; k += 4) {
    a0 = fr(a0 + fr((a[ao + k] as number) * (b[bo + k] as number)));
    a1 = fr(a1 + fr((a[ao + k + 1] as number) * (b[bo + k + 1] as number)));
    a2 = fr(a2 + fr((a[ao + k + 2] as number) * (b[bo + k + 2] as number)));
    a3 = fr(a3 + fr((a[ao + k + 3] as number) * (b[bo + k + 3] as number)));
  }
  let s = fr(fr(a0 + a1) + fr(a2 + a3));
  for (let k = n4; k < n; k++) s = fr(s + fr((a[ao + k] as number) * (b[bo + k] as number)));
  return s;
}

/** X (m, n) @ W^T (d, n) -> out (m, d): out[i, j] = dot(x[i, :], w[j, :]). */
function matmulJs(...[out, x, w, m, n, d]: MatmulArgs): void {
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < d; j++) out[i * d + j] = dot(x, i * n, w, j * n, n);
  }
}

/** SwiGLU, same roundings as `swiglu` in wasm/kernels.ts: out = (g / (1 + expf(-g))) * u. */
function swigluJs(...[out, gu, m, ff]: SwigluArgs): void {
  for (let r = 0; r < m; r++) {
    const g0 = r * 2 * ff;
    const o0 = r * ff;
    for (let i = 0; i < ff; i++) {
      const g = gu[g0 + i] as number;
      const s = fr(g / fr(1 + expf(-g)));
      out[o0 + i] = s * (gu[g0 + ff + i] as number); // the store rounds to f32
    }
  }
}

/** Paged attention, same visiting order and roundings as `attention` in wasm/kernels.ts. */
function attentionJs(...a: AttentionArgs): void {
  const [out, q, kCache, vCache, blockTable, numKeys, numHeads, numKvHeads, headDim, blockSize] = a;
  const scores = a[10];
  const group = numHeads / numKvHeads;
  const row = numKvHeads * headDim;
  const scale = fr(1 / fr(Math.sqrt(headDim)));
  for (let h = 0; h < numHeads; h++) {
    const qh = h * headDim;
    const kvOff = Math.floor(h / group) * headDim;

    // q_h (headDim) . k_t (headDim) * scale -> scores (numKeys), and their max.
    let mx = Number.NEGATIVE_INFINITY;
    let t = 0;
    for (let b = 0; t < numKeys; b++) {
      const end = Math.min(t + blockSize, numKeys);
      let kp = (blockTable[b] as number) * blockSize * row + kvOff;
      for (; t < end; t++) {
        const s = fr(dot(q, qh, kCache, kp, headDim) * scale);
        scores[t] = s;
        if (s > mx) mx = s;
        kp += row;
      }
    }

    let sum = 0;
    for (let u = 0; u < numKeys; u++) {
      const e = expf(fr((scores[u] as number) - mx));
      scores[u] = e;
      sum = fr(sum + e);
    }

    // sum_t e_t v_t (headDim) / sum -> out_h, accumulated in position order.
    out.fill(0, qh, qh + headDim);
    t = 0;
    for (let b = 0; t < numKeys; b++) {
      const end = Math.min(t + blockSize, numKeys);
      let vp = (blockTable[b] as number) * blockSize * row + kvOff;
      for (; t < end; t++) {
        const e = scores[t] as number;
        for (let c = 0; c < headDim; c++) {
          out[qh + c] = fr((out[qh + c] as number) + fr(e * (vCache[vp + c] as number)));
        }
        vp += row;
      }
    }
    for (let c = 0; c < headDim; c++) out[qh + c] = fr((out[qh + c] as number) / sum);
  }
}

// -----------------------------------------------------------------------------------------------
// Kernels object

/**
 * The plain-JS kernels. Allocations are separate typed arrays, counted against `capacityBytes`
 * with the same 16-byte rounding as the wasm arena (so both report the same `usedBytes`).
 * Arrays passed to the kernels must come from this object's `alloc*` (or be subarrays of them),
 * as with the wasm kernels.
 */
export function createJsKernels(capacityBytes: number): Kernels {
  checkCount(capacityBytes, "capacityBytes");
  const owned = new WeakSet<ArrayBufferLike>();
  let used = 0;

  function reserve(n: number, what: string, elementBytes = 4): void {
    checkCount(n, `${what} length`);
    const bytes = roundAllocBytes(n * elementBytes);
    if (used + bytes > capacityBytes) {
      throw new KernelMemoryError(
        `kernel arena full: ${what}(${n}) needs ${bytes} bytes, ` +
          `${capacityBytes - used} of ${capacityBytes} left`,
      );
    }
    used += bytes;
  }

  function own<T extends View>(a: T): T {
    owned.add(a.buffer);
    return a;
  }

  function checkOwned(a: View): void {
    if (!owned.has(a.buffer)) {
      throw new InvariantError("kernel argument was not allocated by this Kernels object");
    }
  }

  return {
    name: "js",
    get usedBytes() {
      return used;
    },
    capacityBytes,
    canAlloc(numBytes: number): boolean {
      return numBytes >= 0 && used + roundAllocBytes(numBytes) <= capacityBytes;
    },
    alloc(n: number): Float32Array {
      reserve(n, "alloc");
      return own(new Float32Array(n));
    },
    allocInt32(n: number): Int32Array {
      reserve(n, "allocInt32");
      return own(new Int32Array(n));
    },
    allocBytes(n: number): Uint8Array {
      reserve(n, "allocBytes", 1);
      return own(new Uint8Array(n));
    },
    matmul(...a: MatmulArgs): void {
      checkOwned(a[0]);
      checkOwned(a[1]);
      checkOwned(a[2]);
      checkMatmul(...a);
      matmulJs(...a);
    },
    residentType: (type) => type,
    toResident(): void {},
    matmulQ(...a: MatmulQArgs): void {
      checkOwned(a[0]);
      checkOwned(a[2]);
      checkOwned(a[3]);
      checkOwned(a[8]);
      checkMatmulQ(...a);
      matmulQJs(...a);
    },
    swiglu(...a: SwigluArgs): void {
      checkOwned(a[0]);
      checkOwned(a[1]);
      checkSwiglu(...a);
      swigluJs(...a);
    },
    attention(...a: AttentionArgs): void {
      for (const v of [a[0], a[1], a[2], a[3], a[4], a[10]]) checkOwned(v);
      checkAttention(...a);
      attentionJs(...a);
    },
  };
}
