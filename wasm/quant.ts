/**
 * Quantised matmul (AssemblyScript, SIMD): weights in their ggml block format, activations
 * quantised per block, integer dot products. Exported through wasm/kernels.ts as `matmulQ`.
 *
 * Mirrors shared/model/kernels-quant-js.ts bit for bit: the activation formats and the order of
 * every float operation are described there and in shared/model/quant.ts. Integer sums are exact,
 * so SIMD may add them in any order; every float operation after them is a scalar f32 operation
 * in the documented order. Type ids are ggml's: F16 1, Q4_0 2, Q4_1 3, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14
 * (wasm/quant-types.ts). This file quantises the activation rows and picks the loop; the dot
 * products live in wasm/quant-matvec.ts (one activation row: Q8_0, Q4_0, Q4_K, Q6_K; Q8_0 and
 * Q4_0 four weight rows a call in wasm/quant-matvec-rows4.ts), wasm/quant-f16.ts (F16 weights),
 * wasm/quant-dot.ts (packed blocks, one row or four rows at a time: the other types, and rows too
 * long for the scratch) and wasm/quant-unpack.ts (weight rows unpacked or prepared once for
 * batches; wasm/quant-prepared.ts: Q8_0's). Built with relaxed SIMD (wasm/kernels-relaxed.wasm,
 * ASC_FEATURE_RELAXED_SIMD), the single-stream Q8_0/Q4_0/Q4_K/Q6_K sums (wasm/quant-relaxed.ts,
 * four rows a call in wasm/quant-relaxed-rows4.ts), the four-row prepared Q4_0 sums and the
 * four-row K-quant sums (wasm/quant-relaxed-batch.ts) are relaxed instead: the same integers, so
 * the same bits; that build also takes Q6_K_LANES, Q6_K in lane order (wasm/quant-lanes.ts).
 */

import { dotQ8, dotQ8x4, dotRow } from "./quant-dot";
import { dotF16x4, dotUnpackedF16x4, f2h, h2f, roundToHalf4, unpackF16x4 } from "./quant-f16";
import { dotQ6_KLr, toLaneOrder } from "./quant-lanes";
import { hasMatvec, matvecQ, widenedBytes } from "./quant-matvec";
import { dotQ8x4x2, preparedQ8Bytes, prepareQ8p, widenQ8 } from "./quant-prepared";
import { matvecQr } from "./quant-relaxed";
import { blockSums8, dotQ4x4r, dotUnpackedKx4r, unpackKr } from "./quant-relaxed-batch";
import { F16, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q6_K_LANES, Q8_0 } from "./quant-types";
import {
  dotPrepared4,
  dotUnpackedK,
  dotUnpackedKx4,
  prepare4,
  prepared4Bytes,
  UNPACK_BYTES,
  unpackBase,
  unpackedBytes,
  unpackK,
  unpackQ4_0,
} from "./quant-unpack";

// ---------------------------------------------------------------------------------------------
// Activation rows

function actRowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 2;
  if (type === Q8_0 || type === Q4_0) return <usize>(n / 32) * 36;
  if (type === Q4_1) return <usize>(n / 32) * 40;
  return <usize>(n / 256) * 292;
}

function rowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 1;
  if (type === Q8_0) return <usize>(n / 32) * 34;
  if (type === Q4_0) return <usize>(n / 32) * 18;
  if (type === Q4_1) return <usize>(n / 32) * 20;
  if (type === Q4_K) return <usize>(n / 256) * 144;
  if (type === Q5_K) return <usize>(n / 256) * 176;
  return <usize>(n / 256) * 210;
}

function quantizeRow(type: i32, x: usize, n: i32, a: usize): void {
  if (type === F16) {
    const n4 = n & ~3;
    for (let i = 0; i < n4; i += 4) {
      const off = (<usize>i) << 2;
      v128.store(a + off, roundToHalf4(v128.load(x + off)));
    }
    for (let i = n4; i < n; i++) {
      const off = (<usize>i) << 2;
      store<f32>(a + off, h2f(f2h(load<f32>(x + off))));
    }
  } else if (type === Q8_0 || type === Q4_0 || type === Q4_1) {
    const q81 = type === Q4_1; // Q8_1: s after d, the q 4 bytes later
    const bb: usize = q81 ? 40 : 36;
    const qo: usize = q81 ? 8 : 4;
    for (let b = 0; b < n / 32; b++) {
      const xb = x + <usize>b * 128;
      const p = a + <usize>b * bb;
      let amax: f32 = 0;
      for (let j = 0; j < 32; j++)
        amax = max<f32>(amax, abs<f32>(load<f32>(xb + ((<usize>j) << 2))));
      const d: f32 = amax / 127;
      const id: f32 = amax !== 0 ? <f32>127 / amax : 0;
      store<f32>(p, h2f(f2h(d)));
      let sum = 0;
      for (let j = 0; j < 32; j++) {
        const q = <i32>nearest<f32>(load<f32>(xb + ((<usize>j) << 2)) * id);
        store<i8>(p + qo + j, <i8>q);
        sum += q;
      }
      if (q81) store<f32>(p + 4, h2f(f2h(d * <f32>sum)));
    }
  } else {
    for (let b = 0; b < n / 256; b++) {
      const xb = x + <usize>b * 1024;
      const p = a + <usize>b * 292;
      let amax: f32 = 0;
      let mx: f32 = 0;
      for (let j = 0; j < 256; j++) {
        const v = load<f32>(xb + ((<usize>j) << 2));
        if (abs<f32>(v) > amax) {
          amax = abs<f32>(v);
          mx = v;
        }
      }
      if (amax === 0) {
        memory.fill(p, 0, 292);
        continue;
      }
      const iscale: f32 = <f32>-127 / mx;
      for (let g = 0; g < 16; g++) {
        let sum = 0;
        for (let j = g * 16; j < g * 16 + 16; j++) {
          const q = min<i32>(127, <i32>nearest<f32>(iscale * load<f32>(xb + ((<usize>j) << 2))));
          store<i8>(p + 4 + j, <i8>q);
          sum += q;
        }
        store<i16>(p + 260 + 2 * g, <i16>sum);
      }
      store<f32>(p, <f32>1 / iscale);
    }
  }
}

/**
 * out[i * ldo + j] = dot(x row i, w row j) for i < m, j < d: x (m, n) f32, w d rows of `type`
 * blocks, `scratch` room for m activation rows. Byte offsets; shapes checked by the adapter.
 */
export function matmulQ(
  out: usize,
  ldo: i32,
  x: usize,
  w: usize,
  type: i32,
  m: i32,
  n: i32,
  d: i32,
  scratch: usize,
): void {
  // Q6_K_LANES (relaxed build only, wasm/quant-lanes.ts): Q6_K's sizes and activations, the
  // activations in lane order; `type` is Q6_K from here on but where the layout matters
  const lanes = ASC_FEATURE_RELAXED_SIMD && type === Q6_K_LANES;
  if (lanes) type = Q6_K;
  const ar = actRowBytes(type, n);
  const wr = rowBytes(type, n);
  for (let i = 0; i < m; i++) {
    const ai = scratch + <usize>i * ar;
    quantizeRow(type, x + ((<usize>i * <usize>n) << 2), n, ai);
    if (lanes) toLaneOrder(ai, n);
  }
  if (m === 1 && hasMatvec(type) && widenedBytes(n) <= UNPACK_BYTES) {
    // single stream: the activation row widened once, then every weight row against it
    if (ASC_FEATURE_RELAXED_SIMD) {
      matvecQr(lanes ? Q6_K_LANES : type, out, w, wr, scratch, n, d, unpackBase());
    } else matvecQ(type, out, w, wr, scratch, n, d, unpackBase());
    return;
  }
  const ob = (<usize>ldo) << 2;
  const ub = unpackedBytes(type, n);
  let j0 = 0;
  const q8 = type === Q8_0;
  const pb = q8 ? preparedQ8Bytes(n) : prepared4Bytes(n);
  // per activation row after the prepared rows: Q8_0 its q widened to int16, the relaxed build's
  // Q4_0 its blocks' 8 * sum(q)
  const q4r = ASC_FEATURE_RELAXED_SIMD && type === Q4_0;
  const sb: usize = q8 ? (<usize>n) << 1 : q4r ? (<usize>(n >> 5)) << 2 : 0;
  if ((type === Q4_0 || q8) && m >= 2 && pb + (sb << 1) <= UNPACK_BYTES) {
    // four weight rows prepared at once (Q4_0 int8, Q8_0 int16 quants; f32 scales), then dotted
    // with each activation row (Q8_0: two a call, an odd last row passed as both), the activation
    // rows in chunks whose side data fit beside the prepared rows
    const u = unpackBase();
    const xs = u + pb;
    const chunk = sb > 0 ? min<i32>(m, <i32>((UNPACK_BYTES - pb) / sb)) : m;
    const jd = d & ~3;
    for (let i0 = 0; i0 < m; i0 += chunk) {
      const i1 = min<i32>(m, i0 + chunk);
      for (let i = i0; i < i1; i++) {
        const ai = scratch + <usize>i * ar;
        if (q8) widenQ8(ai, n, xs + <usize>(i - i0) * sb);
        else if (q4r) blockSums8(ai, n, xs + <usize>(i - i0) * sb);
      }
      for (let j = 0; j < jd; j += 4) {
        const oj = out + ((<usize>j) << 2);
        if (q8) prepareQ8p(w + <usize>j * wr, wr, n, u);
        else prepare4(w + <usize>j * wr, wr, n, u);
        for (let i = i0; i < i1; i += q8 ? 2 : 1) {
          const ai = scratch + <usize>i * ar;
          const oi = oj + <usize>i * ob;
          const si = xs + <usize>(i - i0) * sb;
          if (q8) {
            const i2 = min<i32>(i + 1, i1 - 1);
            const s2 = xs + <usize>(i2 - i0) * sb;
            dotQ8x4x2(u, ai, scratch + <usize>i2 * ar, si, s2, n, oi, oj + <usize>i2 * ob);
          } else if (ASC_FEATURE_RELAXED_SIMD) dotQ4x4r(u, ai, si, n, oi);
          else dotPrepared4(u, ai, n, oi);
        }
      }
    }
    j0 = jd;
  }
  if (type !== Q4_0 && type !== F16 && type !== Q8_0 && type !== Q4_1 && m >= 2) {
    if (ub << 2 <= UNPACK_BYTES) {
      // K-quants: four weight rows unpacked at once, then four rows per activation row
      const u = unpackBase();
      for (; j0 + 4 <= d; j0 += 4) {
        const wj = w + <usize>j0 * wr;
        const oj = out + ((<usize>j0) << 2);
        for (let r: usize = 0; r < 4; r++) {
          if (ASC_FEATURE_RELAXED_SIMD)
            unpackKr(lanes ? Q6_K_LANES : type, wj + r * wr, u + r * ub, n);
          else unpackK(type, wj + r * wr, u + r * ub, n);
        }
        for (let i = 0; i < m; i++) {
          const ai = scratch + <usize>i * ar;
          if (ASC_FEATURE_RELAXED_SIMD) dotUnpackedKx4r(type, u, ub, ai, n, oj + <usize>i * ob);
          else dotUnpackedKx4(type, u, ub, ai, n, oj + <usize>i * ob);
        }
      }
    }
  }
  const unpack = !lanes && (type === Q4_0 || type === Q4_K || type === Q5_K || type === Q6_K);
  if (m >= 2 && unpack && ub <= UNPACK_BYTES) {
    const u = unpackBase();
    for (let j = j0; j < d; j++) {
      const wj = w + <usize>j * wr;
      const oj = out + ((<usize>j) << 2);
      if (type === Q4_0) {
        unpackQ4_0(wj, u, n);
        for (let i = 0; i < m; i++)
          store<f32>(oj + <usize>i * ob, dotQ8(false, u, scratch + <usize>i * ar, n));
      } else {
        unpackK(type, wj, u, n);
        for (let i = 0; i < m; i++)
          store<f32>(oj + <usize>i * ob, dotUnpackedK(type, u, scratch + <usize>i * ar, n));
      }
    }
    return;
  }
  if ((type === Q8_0 || type === Q4_0) && m >= 2) {
    // rows too long to prepare in the scratch: four weight rows per pass over each activation row
    for (; j0 + 4 <= d; j0 += 4) {
      const wj = w + <usize>j0 * wr;
      const oj = out + ((<usize>j0) << 2);
      for (let i = 0; i < m; i++)
        dotQ8x4(type === Q4_0, wj, wr, scratch + <usize>i * ar, n, oj + <usize>i * ob);
    }
  }
  if (type === F16) {
    // with two or more rows, each group of four weight rows is widened to f32 once
    const widen = m >= 2 && (<usize>n) << 4 <= UNPACK_BYTES;
    const u = unpackBase();
    for (; j0 + 4 <= d; j0 += 4) {
      const wj = w + <usize>j0 * wr;
      const oj = out + ((<usize>j0) << 2);
      if (widen) {
        unpackF16x4(wj, wr, n, u);
        for (let i = 0; i < m; i++)
          dotUnpackedF16x4(u, scratch + <usize>i * ar, n, oj + <usize>i * ob);
      } else {
        for (let i = 0; i < m; i++)
          dotF16x4(wj, wr, scratch + <usize>i * ar, n, oj + <usize>i * ob);
      }
    }
  }
  for (let j = j0; j < d; j++) {
    const wj = w + <usize>j * wr;
    const oj = out + ((<usize>j) << 2);
    for (let i = 0; i < m; i++) {
      const ai = scratch + <usize>i * ar;
      const v = lanes ? dotQ6_KLr(wj, ai, n, unpackBase()) : dotRow(type, wj, ai, n);
      store<f32>(oj + <usize>i * ob, v);
    }
  }
}
