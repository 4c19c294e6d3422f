/**
 * Relaxed-SIMD integer sums for batches (two or more activation rows) in the quantised matmul
 * (wasm/quant.ts), compiled into wasm/kernels-relaxed.wasm only (see wasm/quant-relaxed.ts for
 * the build switch and for why every relaxed dot product here is exact): four weight rows
 * prepared (Q4_0: wasm/quant-unpack.ts's prepare4) or unpacked (K-quants: unpackKr) once, then
 * dotted with every activation row.
 */

import { isum4, q4kScaleBytes } from "./quant-dot";
import { h2f } from "./quant-f16";
import { unpackQ6_KL } from "./quant-lanes";
import { HI2, M, NIB8, PART } from "./quant-matvec";
import { dot2, q8BlockSum } from "./quant-relaxed";
import { Q5_K, Q6_K, Q6_K_LANES } from "./quant-types";
import { kBlock4, storeKMins } from "./quant-unpack";

/** The n / 32 int32 8 * sum(q) of the Q8_0 activation row at a (36-byte blocks) at u (dotQ4x4r). */
export function blockSums8(a: usize, n: i32, u: usize): void {
  for (let b = 0; b < n >> 5; b++, a += 36, u += 4) store<i32>(u, q8BlockSum(a) << 3);
}

/**
 * Four prepared Q4_0 rows (prepare4, the nibbles kept 0..15 in this build) against one Q8_0
 * activation row a with its blockSums8 at sums, into o .. o + 12, with the float steps of
 * dotPrepared4: per row two relaxed dots of the nibbles with q (4 products of at most 15 * 127 an
 * int16 lane), the four rows folded into one vector in int16 (16 products a lane, within 32767)
 * and widened once, less 8 * sum(q).
 */
export function dotQ4x4r(p: usize, a: usize, sums: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n >> 5; b++, p += 144, a += 36, sums += 4) {
    const x0 = v128.load(a, 4);
    const x1 = v128.load(a, 20);
    const d0 = rowQ4r(p, x0, x1);
    const d1 = rowQ4r(p + 32, x0, x1);
    const d2 = rowQ4r(p + 64, x0, x1);
    const d3 = rowQ4r(p + 96, x0, x1);
    const h01 = i16x8.add(v128.shuffle<i64>(d0, d1, 0, 2), v128.shuffle<i64>(d0, d1, 1, 3));
    const h23 = i16x8.add(v128.shuffle<i64>(d2, d3, 0, 2), v128.shuffle<i64>(d2, d3, 1, 3));
    const h = i16x8.add(
      v128.shuffle<i32>(h01, h23, 0, 2, 4, 6),
      v128.shuffle<i32>(h01, h23, 1, 3, 5, 7),
    );
    const s = i32x4.sub(i32x4.extadd_pairwise_i16x8_s(h), v128.load32_splat(sums));
    const dd = f32x4.mul(v128.load(p, 128), v128.load32_splat(a));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  v128.store(o, acc);
}

/** int16 partial sums of one prepared Q4_0 row's block (nibbles at q) times x0, x1. */
function rowQ4r(q: usize, x0: v128, x1: v128): v128 {
  return i16x8.add(dot2(x0, v128.load(q)), dot2(x1, v128.load(q, 16)));
}

/**
 * Unpacks one K-quant row (Q4_K, Q5_K, Q6_K, Q6_K_LANES) for `dotUnpackedKx4r`, K_UNPACKED bytes
 * a block: the 256 quants as bytes in value order (Q4_K 0..15, Q5_K 0..31, Q6_K 0..63: no
 * offset; Q6_K_LANES in lane order, wasm/quant-lanes.ts's unpackQ6_KL, for lane-order
 * activations), then for each 16 values the sub-block scale as eight int16, then (Q4_K, Q5_K)
 * the eight mins as int32 or (Q6_K) the sixteen scales as int16, then f32 d and f32 dmin.
 */
export function unpackKr(type: i32, w: usize, u: usize, n: i32): void {
  const lo = v128.load(M + NIB8);
  for (let b = 0; b < n >> 8; b++, u += K_UNPACKED) {
    if (type === Q6_K_LANES) {
      unpackQ6_KL(w, u);
      w += 210;
    } else if (type !== Q6_K) {
      const five = type === Q5_K;
      const qs: usize = five ? 48 : 16;
      const one = i8x16.splat(1);
      const scb = q4kScaleBytes(w + 4);
      v128.store(PART, i16x8.extend_low_i8x16_u(scb));
      for (let c: usize = 0; c < 4; c++) {
        for (let h: usize = 0; h < 32; h += 16) {
          const q = v128.load(w + qs + (c << 5) + h);
          let e = v128.and(q, lo);
          let o = v128.and(i16x8.shr_u(q, 4), lo);
          if (five) {
            const hb = i8x16.shr_u(v128.load(w + 16 + h), (<i32>c) << 1);
            e = v128.or(e, i8x16.shl(v128.and(hb, one), 4));
            o = v128.or(o, i8x16.shl(v128.and(i8x16.shr_u(hb, 1), one), 4));
          }
          v128.store(u + (c << 6) + h, e);
          v128.store(u + (c << 6) + 32 + h, o);
        }
      }
      // 16 values g lie in sub-block g >> 1
      for (let g: usize = 0; g < 16; g++) {
        v128.store(u + 256 + (g << 4), v128.load16_splat(PART + ((g >> 1) << 1)));
      }
      storeKMins(u, scb, w);
      w += five ? 176 : 144;
    } else {
      const m30 = v128.load(M + HI2);
      for (let j: usize = 0; j < 4; j++) {
        // as dotQ6_Kr's pass j: values 128h + 32k + p .. + 16 from ql, qh
        const h = j >> 1;
        const p = (j & 1) << 4;
        const ql = w + (h << 6) + p;
        const qa = v128.load(ql);
        const qb = v128.load(ql, 32);
        const hb = v128.load(w + (h << 5) + p, 128);
        const o = u + (h << 7) + p;
        v128.store(o, v128.or(v128.and(qa, lo), v128.and(i16x8.shl(hb, 4), m30)));
        v128.store(o, v128.or(v128.and(qb, lo), v128.and(i16x8.shl(hb, 2), m30)), 32);
        v128.store(o, v128.or(v128.and(i16x8.shr_u(qa, 4), lo), v128.and(hb, m30)), 64);
        v128.store(
          o,
          v128.or(v128.and(i16x8.shr_u(qb, 4), lo), v128.and(i16x8.shr_u(hb, 2), m30)),
          96,
        );
      }
      const sc = v128.load(w, 192);
      const sl = i16x8.extend_low_i8x16_s(sc);
      const sh = i16x8.extend_high_i8x16_s(sc);
      v128.store(u + 512, sl);
      v128.store(u + 528, sh);
      for (let g: usize = 0; g < 16; g++) {
        v128.store(u + 256 + (g << 4), v128.load16_splat(u + 512 + (g << 1)));
      }
      store<f32>(u + 544, h2f(load<u16>(w + 208)));
      w += 210;
    }
  }
}

/** Bytes of one unpacked K-quant block (the same as wasm/quant-unpack.ts's unpackK). */
const K_UNPACKED: usize = 560;

/**
 * Four rows unpacked by unpackKr (u, u + ub, u + 2 ub, u + 3 ub) against one Q8_K activation row
 * into o .. o + 12: per 16 values one dot2 (within 2 * 63 * 128) times the scale lanes by
 * i32x4.dot_i16x8_s; Q6_K less 32 * sum_g sc_g * bsum_g; then the float steps of dotUnpackedKx4.
 */
export function dotUnpackedKx4r(type: i32, u: usize, ub: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n >> 8; b++, u += K_UNPACKED, a += 292) {
    let s0 = i32x4.splat(0);
    let s1 = i32x4.splat(0);
    let s2 = i32x4.splat(0);
    let s3 = i32x4.splat(0);
    for (let k: usize = 0; k < 256; k += 16) {
      const x = v128.load(a + 4 + k);
      const p = u + k;
      const sc = u + 256 + k;
      s0 = i32x4.add(s0, i32x4.dot_i16x8_s(dot2(x, v128.load(p)), v128.load(sc)));
      s1 = i32x4.add(s1, i32x4.dot_i16x8_s(dot2(x, v128.load(p + ub)), v128.load(sc + ub)));
      s2 = i32x4.add(s2, i32x4.dot_i16x8_s(dot2(x, v128.load(p + 2 * ub)), v128.load(sc + 2 * ub)));
      s3 = i32x4.add(s3, i32x4.dot_i16x8_s(dot2(x, v128.load(p + 3 * ub)), v128.load(sc + 3 * ub)));
    }
    if (type === Q6_K) {
      s0 = i32x4.sub(s0, q6Offset(u, a));
      s1 = i32x4.sub(s1, q6Offset(u + ub, a));
      s2 = i32x4.sub(s2, q6Offset(u + 2 * ub, a));
      s3 = i32x4.sub(s3, q6Offset(u + 3 * ub, a));
    }
    acc = kBlock4(acc, type, u, ub, a, isum4(s0, s1, s2, s3));
  }
  v128.store(o, acc);
}

/** i32x4 partials of 32 * sum_g sc_g * bsum_g: an unpacked Q6_K block's offset term. */
function q6Offset(u: usize, a: usize): v128 {
  const t = i32x4.add(
    i32x4.dot_i16x8_s(v128.load(u, 512), v128.load(a, 260)),
    i32x4.dot_i16x8_s(v128.load(u, 528), v128.load(a, 276)),
  );
  return i32x4.shl(t, 5);
}
