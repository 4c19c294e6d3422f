/**
 * Q8_0 batches (two or more activation rows) in the quantised matmul (wasm/quant.ts), both
 * builds: four weight rows widened to int16 once and interleaved by pairs (prepareQ8p), each
 * activation row widened once (widenQ8), then two activation rows a call against the four rows
 * by i32x4.dot_i16x8_s, each loaded weight vector used for both. Integer sums are exact; the
 * float steps are dotQ8's (wasm/quant-dot.ts), block by block.
 */

import { h2f4at } from "./quant-dot";

/** Bytes of four Q8_0 rows prepared by prepareQ8p: per block four rows of 32 int16, four f32. */
export function preparedQ8Bytes(n: i32): usize {
  return <usize>(n >> 5) * 272;
}

/**
 * Prepares four Q8_0 rows for dotQ8x4p: per block, for the row pairs (0, 1) and (2, 3), eight
 * 16-byte steps, step k holding values 4k .. 4k + 3 of the pair's first row then of its second as
 * int16; then the four rows' scales d as f32 (exact).
 */
export function prepareQ8p(w: usize, wr: usize, n: i32, p: usize): void {
  for (let b = 0; b < n >> 5; b++, w += 34, p += 272) {
    for (let r: usize = 0; r < 4; r += 2) {
      const o = p + (r << 6);
      for (let h: usize = 0; h < 32; h += 16) {
        const qa = v128.load(w + r * wr + 2 + h);
        const qb = v128.load(w + (r + 1) * wr + 2 + h);
        const al = i16x8.extend_low_i8x16_s(qa);
        const bl = i16x8.extend_low_i8x16_s(qb);
        const ah = i16x8.extend_high_i8x16_s(qa);
        const bh = i16x8.extend_high_i8x16_s(qb);
        const s = o + (h << 2);
        v128.store(s, v128.shuffle<i64>(al, bl, 0, 2));
        v128.store(s, v128.shuffle<i64>(al, bl, 1, 3), 16);
        v128.store(s, v128.shuffle<i64>(ah, bh, 0, 2), 32);
        v128.store(s, v128.shuffle<i64>(ah, bh, 1, 3), 48);
      }
    }
    v128.store(p, h2f4at(w, wr), 256);
  }
}

/** The Q8_0 activation row at a (36-byte blocks) as n int16 at u, for dotQ8x4p. */
export function widenQ8(a: usize, n: i32, u: usize): void {
  for (let b = 0; b < n >> 5; b++, a += 36, u += 64) {
    v128.store(u, v128.load8x8_s(a, 4));
    v128.store(u, v128.load8x8_s(a, 12), 16);
    v128.store(u, v128.load8x8_s(a, 20), 32);
    v128.store(u, v128.load8x8_s(a, 28), 48);
  }
}

/**
 * Four rows prepared by prepareQ8p against the Q8_0 activation rows a and a2 (d_x there, q
 * widened by widenQ8 at x and x2), into o .. o + 12 and o2 .. o2 + 12 (a2 = a, x2 = x, o2 = o
 * for one row): lane r is row r, acc_r = acc_r + f32(s_r) * (d_w,r * d_x) block by block. Per
 * step four activations splat to both int64 halves and one i32x4.dot_i16x8_s with a row pair's
 * eight weights, so each row's partial sums stay in its own two lanes until `pairs`.
 */
export function dotQ8x4x2(
  p: usize,
  a: usize,
  a2: usize,
  x: usize,
  x2: usize,
  n: i32,
  o: usize,
  o2: usize,
): void {
  let acc = f32x4.splat(0);
  let acc2 = f32x4.splat(0);
  for (let b = 0; b < n >> 5; b++, p += 272, a += 36, a2 += 36, x += 64, x2 += 64) {
    let s01 = i32x4.splat(0);
    let s23 = i32x4.splat(0);
    let t01 = i32x4.splat(0);
    let t23 = i32x4.splat(0);
    for (let k: usize = 0; k < 8; k++) {
      const xk = v128.load64_splat(x + (k << 3));
      const yk = v128.load64_splat(x2 + (k << 3));
      const w01 = v128.load(p + (k << 4));
      const w23 = v128.load(p + 128 + (k << 4));
      s01 = i32x4.add(s01, i32x4.dot_i16x8_s(w01, xk));
      s23 = i32x4.add(s23, i32x4.dot_i16x8_s(w23, xk));
      t01 = i32x4.add(t01, i32x4.dot_i16x8_s(w01, yk));
      t23 = i32x4.add(t23, i32x4.dot_i16x8_s(w23, yk));
    }
    const sc = v128.load(p, 256);
    acc = f32x4.add(
      acc,
      f32x4.mul(f32x4.convert_i32x4_s(pairs(s01, s23)), f32x4.mul(sc, v128.load32_splat(a))),
    );
    acc2 = f32x4.add(
      acc2,
      f32x4.mul(f32x4.convert_i32x4_s(pairs(t01, t23)), f32x4.mul(sc, v128.load32_splat(a2))),
    );
  }
  v128.store(o, acc);
  v128.store(o2, acc2);
}

/** Lane r: row r's two partial sums (rows 0, 1 in s01; rows 2, 3 in s23) added. */
function pairs(s01: v128, s23: v128): v128 {
  return i32x4.add(
    v128.shuffle<i32>(s01, s23, 0, 2, 4, 6),
    v128.shuffle<i32>(s01, s23, 1, 3, 5, 7),
  );
}
