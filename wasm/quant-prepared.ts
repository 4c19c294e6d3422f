/**
 * Q8_0 weight rows prepared for batches (two or more activation rows) in the quantised matmul
 * (wasm/quant.ts), both builds: four rows at a time widened to int16 once, then two activation
 * rows at a time against them by i32x4.dot_i16x8_s, each loaded weight vector used for both.
 * Integer sums are exact; the float steps are dotQ8's (wasm/quant-dot.ts), block by block.
 */

import { h2f4at, isum4 } from "./quant-dot";

/** Bytes of four Q8_0 rows prepared by prepareQ8w: per block four rows of 32 int16, four f32. */
export function preparedQ8wBytes(n: i32): usize {
  return <usize>(n >> 5) * 272;
}

/**
 * Prepares four Q8_0 rows (at w, w + wr, w + 2 wr, w + 3 wr) for dotQ8x4x2: block by block each
 * row's 32 quants widened to int16, then the four rows' scales d as f32 (exact).
 */
export function prepareQ8w(w: usize, wr: usize, n: i32, p: usize): void {
  for (let b = 0; b < n >> 5; b++, w += 34, p += 272) {
    for (let r: usize = 0; r < 4; r++) {
      const q0 = v128.load(w + r * wr, 2);
      const q1 = v128.load(w + r * wr, 18);
      const o = p + (r << 6);
      v128.store(o, i16x8.extend_low_i8x16_s(q0));
      v128.store(o, i16x8.extend_high_i8x16_s(q0), 16);
      v128.store(o, i16x8.extend_low_i8x16_s(q1), 32);
      v128.store(o, i16x8.extend_high_i8x16_s(q1), 48);
    }
    v128.store(p, h2f4at(w, wr), 256);
  }
}

/**
 * Four rows prepared by prepareQ8w against the Q8_0 activation rows a and a2, into o .. o + 12
 * and o2 .. o2 + 12 (a2 = a, o2 = o for one row): lane r is row r, acc_r = acc_r + f32(s_r) *
 * (d_w,r * d_x) block by block, each loaded weight vector dotted with both rows' widened q.
 */
export function dotQ8x4x2(p: usize, a: usize, a2: usize, n: i32, o: usize, o2: usize): void {
  let acc = f32x4.splat(0);
  let acc2 = f32x4.splat(0);
  for (let b = 0; b < n >> 5; b++, p += 272, a += 36, a2 += 36) {
    let s0 = i32x4.splat(0);
    let s1 = i32x4.splat(0);
    let s2 = i32x4.splat(0);
    let s3 = i32x4.splat(0);
    let t0 = i32x4.splat(0);
    let t1 = i32x4.splat(0);
    let t2 = i32x4.splat(0);
    let t3 = i32x4.splat(0);
    for (let k: usize = 0; k < 4; k++) {
      const x = v128.load8x8_s(a + 4 + (k << 3));
      const y = v128.load8x8_s(a2 + 4 + (k << 3));
      const w0 = v128.load(p + (k << 4));
      const w1 = v128.load(p + 64 + (k << 4));
      const w2 = v128.load(p + 128 + (k << 4));
      const w3 = v128.load(p + 192 + (k << 4));
      s0 = i32x4.add(s0, i32x4.dot_i16x8_s(w0, x));
      s1 = i32x4.add(s1, i32x4.dot_i16x8_s(w1, x));
      s2 = i32x4.add(s2, i32x4.dot_i16x8_s(w2, x));
      s3 = i32x4.add(s3, i32x4.dot_i16x8_s(w3, x));
      t0 = i32x4.add(t0, i32x4.dot_i16x8_s(w0, y));
      t1 = i32x4.add(t1, i32x4.dot_i16x8_s(w1, y));
      t2 = i32x4.add(t2, i32x4.dot_i16x8_s(w2, y));
      t3 = i32x4.add(t3, i32x4.dot_i16x8_s(w3, y));
    }
    const sc = v128.load(p, 256);
    const dd = f32x4.mul(sc, v128.load32_splat(a));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(isum4(s0, s1, s2, s3)), dd));
    const dd2 = f32x4.mul(sc, v128.load32_splat(a2));
    acc2 = f32x4.add(acc2, f32x4.mul(f32x4.convert_i32x4_s(isum4(t0, t1, t2, t3)), dd2));
  }
  v128.store(o, acc);
  v128.store(o2, acc2);
}
