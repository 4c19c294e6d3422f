/**
 * Q6_K in lane order (Q6_K_LANES, wasm/quant-types.ts), the relaxed build's resident form of Q6_K
 * matrices (shared/model/quant.ts describes the layout; packQ6kLanes below packs a matrix at
 * load, through Kernels.toResident): the same 210 bytes
 * a block, the same scales and d, the 256 quants permuted and re-packed so that a 128-bit
 * machine does less work per value.
 *
 * Each 64 values (a "pass" p, 0..3) are four 16-byte vectors q0..q3 of 6-bit quants; byte i of
 * vector k (lane position L = 64 p + 16 k + i) holds value 16 (i / 2 + 8 (k / 2)) + 2 (2 p + k % 2)
 * + i % 2 of the block. So every int16 lane of a dot2 of any vector holds two values of one
 * sub-block, sub-block i / 2 (q0, q1) or 8 + i / 2 (q2, q3): the scales multiply as two fixed
 * vectors (the block's sixteen int8 scales widened, low and high half) instead of a splat per 16
 * values, and two dot2 of the same half are added in int16 first (|q x| <= 63 * 128, four
 * products a lane: at most 32256, exact). The pass is stored in 48 bytes: bytes k = 0, 1, 2 hold
 * qk in their low six bits and bits 2k, 2k + 1 of q3 in their top two, so q0..q2 are one AND each
 * and q3 three shifts and ORs of the top bits (11 operations for 64 values against 17 for
 * GGUF's ql/qh, and no scale splats).
 *
 * The activation row (Q8_K) is permuted the same way once per call (toLaneOrder); its bsums are
 * per sub-block and stay. The integer sums are the exact numbers of the GGUF-order kernels and
 * the float steps the same, so the results are bit for bit dotQ6_Kr's (wasm/quant-relaxed.ts).
 * Relaxed build only: callers test ASC_FEATURE_RELAXED_SIMD.
 */

import { isum } from "./quant-dot";
import { h2f } from "./quant-f16";
import { dot2, q6Scales } from "./quant-relaxed";
import { q6Epilogue4 } from "./quant-relaxed-rows4";

/** Value index of lane position L (the header's map), for toLaneOrder. */
function laneValue(l: i32): i32 {
  const p = l >> 6;
  const k = (l >> 4) & 3;
  const i = l & 15;
  return ((i >> 1) << 4) + ((k >> 1) << 7) + ((p << 2) | ((k & 1) << 1)) + (i & 1);
}

/** 256 bytes of scratch for toLaneOrder. */
const TMP = memory.data(256, 16);

/** The low six bits of every byte. */
const M63 = memory.data<u8>([63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63]);

/** Puts the q of each Q8_K block (292 bytes) of activation row a (n values) in lane order. */
export function toLaneOrder(a: usize, n: i32): void {
  for (let b = 0; b < n >> 8; b++, a += 292) {
    memory.copy(TMP, a + 4, 256);
    for (let l = 0; l < 256; l++) store<u8>(a + 4 + <usize>l, load<u8>(TMP + <usize>laneValue(l)));
  }
}

/**
 * One pass (64 values) of a lane-order block: the 48 bytes at w against the 64 lane-order
 * activations at x, the two scale halves sl, sh; t plus the pass's sums.
 */
function pass(w: usize, x: usize, sl: v128, sh: v128, t: v128): v128 {
  const m = v128.load(M63);
  const v0 = v128.load(w);
  const v1 = v128.load(w, 16);
  const v2 = v128.load(w, 32);
  const q0 = v128.and(v0, m);
  const q1 = v128.and(v1, m);
  const q2 = v128.and(v2, m);
  // q3: the top two bits of v0, v1, v2 at bits 0-1, 2-3, 4-5 (int16 shifts: the masked top bits
  // of a lane's high byte never reach its low byte)
  let u = v128.or(i16x8.shr_u(v128.xor(v0, q0), 2), v128.xor(v1, q1));
  u = v128.or(i16x8.shr_u(u, 2), v128.xor(v2, q2));
  const q3 = i16x8.shr_u(u, 2);
  const lo = i16x8.add(dot2(v128.load(x), q0), dot2(v128.load(x, 16), q1));
  const hi = i16x8.add(dot2(v128.load(x, 32), q2), dot2(v128.load(x, 48), q3));
  t = i32x4.add(t, i32x4.dot_i16x8_s(lo, sl));
  return i32x4.add(t, i32x4.dot_i16x8_s(hi, sh));
}

/**
 * One lane-order block's integer sum (dotQ6_Kr's s) as i32x4 partials into o. The partials are
 * stored after each pass: V8 then cannot hoist the next pass's loads above this pass's arithmetic
 * and spill them (as wasm/quant-relaxed-rows4.ts's q6Block).
 */
function laneBlock(w: usize, a: usize, o: usize, s: usize): void {
  let t = q6Scales(w, a, s);
  const sl = v128.load(s);
  const sh = v128.load(s, 16);
  t = pass(w, a + 4, sl, sh, t);
  v128.store(o, t);
  t = pass(w + 48, a + 68, sl, sh, t);
  v128.store(o, t);
  t = pass(w + 96, a + 132, sl, sh, t);
  v128.store(o, t);
  t = pass(w + 144, a + 196, sl, sh, t);
  v128.store(o, t);
}

/** The block's scales as int16 (q6Scales' destination). */
const SC = memory.data(32, 16);

/**
 * The integer sums of `rows` lane-order rows (w, w + wr, ...; nb blocks each) against the
 * lane-order activation row a, as i32x4 partials at p + 64 b + 16 r: row after row, so the
 * weights are read in address order, and laneBlock has this one caller (inlined: one call per
 * row group instead of one per block).
 */
function laneRows(w: usize, wr: usize, a: usize, nb: usize, p: usize, rows: usize): void {
  for (let r: usize = 0; r < rows; r++, w += wr) {
    for (let b: usize = 0, wj = w; b < nb; b++, wj += 210) {
      laneBlock(wj, a + b * 292, p + (b << 6) + (r << 4), SC);
    }
  }
}

/**
 * Lane-order Q6_K rows w, w + wr, w + 2 wr, w + 3 wr against the lane-order Q8_K activation row a
 * into o .. o + 12, with n / 4 bytes of scratch at p: as dotQ6_Kr4 (the integer sums row after
 * row, then its epilogue).
 */
export function dotQ6_KLr4(w: usize, wr: usize, a: usize, n: i32, o: usize, p: usize): void {
  const nb = <usize>(n >> 8);
  laneRows(w, wr, a, nb, p, 4);
  q6Epilogue4(w, wr, a, nb, o, p);
}

/**
 * One lane-order Q6_K row against the lane-order Q8_K activation row a, with 32 KiB of scratch at
 * p (the partials of up to 512 blocks at a time): dotQ6_Kr's value.
 */
export function dotQ6_KLr(w: usize, a: usize, n: i32, p: usize): f32 {
  const nb = <usize>(n >> 8);
  let acc: f32 = 0;
  for (let b0: usize = 0; b0 < nb; b0 += 512) {
    const c = min<usize>(512, nb - b0);
    laneRows(w, 0, a, c, p, 1);
    for (let b: usize = 0; b < c; b++, w += 210, a += 292) {
      acc += h2f(load<u16>(w, 208)) * load<f32>(a) * <f32>isum(v128.load(p + (b << 6)));
    }
  }
  return acc;
}

/**
 * Unpacks one lane-order block at w for dotUnpackedKx4r (wasm/quant-relaxed-batch.ts) at u: the
 * quants in lane order (the activations are too), each 16 the int16 scales of their lanes (sl
 * for q0, q1; sh for q2, q3), then sl, sh and f32 d as unpackKr's Q6_K.
 */
export function unpackQ6_KL(w: usize, u: usize): void {
  const sc = v128.load(w, 192);
  const sl = i16x8.extend_low_i8x16_s(sc);
  const sh = i16x8.extend_high_i8x16_s(sc);
  const m = v128.load(M63);
  for (let p: usize = 0; p < 4; p++) {
    const v0 = v128.load(w + p * 48);
    const v1 = v128.load(w + p * 48, 16);
    const v2 = v128.load(w + p * 48, 32);
    const q0 = v128.and(v0, m);
    const q1 = v128.and(v1, m);
    const q2 = v128.and(v2, m);
    let t = v128.or(i16x8.shr_u(v128.xor(v0, q0), 2), v128.xor(v1, q1));
    t = v128.or(i16x8.shr_u(t, 2), v128.xor(v2, q2));
    const o = u + (p << 6);
    v128.store(o, q0);
    v128.store(o, q1, 16);
    v128.store(o, q2, 32);
    v128.store(o, i16x8.shr_u(t, 2), 48);
    const s = u + 256 + (p << 6);
    v128.store(s, sl);
    v128.store(s, sl, 16);
    v128.store(s, sh, 32);
    v128.store(s, sh, 48);
  }
  v128.store(u + 512, sl);
  v128.store(u + 528, sh);
  store<f32>(u + 544, h2f(load<u16>(w + 208)));
}

/** The top two bits of every byte. */
const MC0 = memory.data<u8>([
  192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192,
]);

/**
 * Rewrites nb Q6_K blocks at w in place as Q6_K_LANES (shared/model/quant.ts's packQ6kLanes, the
 * reference): each block's quants unpacked in value order to TMP (unpackKr's Q6_K steps), as a
 * 16 x 16 byte matrix (value 16 r + c at row r, column c); lane order's vector k of pass p is
 * column pair 2 p + k % 2 (as int16) of rows 8 (k / 2) .. + 8, so each half of the rows is
 * transposed as 8 x 8 int16, then q3's bits go into the top of q0..q2.
 */
export function packQ6kLanes(w: usize, nb: i32): void {
  const m4 = i8x16.splat(0x0f);
  const m30 = i8x16.splat(0x30);
  const c0 = v128.load(MC0);
  for (let b = 0; b < nb; b++, w += 210) {
    for (let j: usize = 0; j < 4; j++) {
      const h = j >> 1;
      const p = (j & 1) << 4;
      const qa = v128.load(w + (h << 6) + p);
      const qb = v128.load(w + (h << 6) + p, 32);
      const hb = v128.load(w + (h << 5) + p, 128);
      const o = TMP + (h << 7) + p;
      v128.store(o, v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30)));
      v128.store(o, v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30)), 32);
      v128.store(o, v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30)), 64);
      v128.store(
        o,
        v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30)),
        96,
      );
    }
    transposeHalf(TMP, COLS);
    transposeHalf(TMP + 128, COLS + 128);
    for (let p: usize = 0; p < 4; p++) {
      // q0, q1: columns 2p, 2p + 1 of the first half; q2, q3: of the second
      const q0 = v128.load(COLS + (p << 5));
      const q1 = v128.load(COLS + (p << 5), 16);
      const q2 = v128.load(COLS + 128 + (p << 5));
      const q3 = v128.load(COLS + 128 + (p << 5), 16);
      const o = w + p * 48;
      v128.store(o, v128.or(q0, v128.and(i16x8.shl(q3, 6), c0)));
      v128.store(o, v128.or(q1, v128.and(i16x8.shl(q3, 4), c0)), 16);
      v128.store(o, v128.or(q2, v128.and(i16x8.shl(q3, 2), c0)), 32);
    }
  }
}

/** The two transposed halves of TMP: column c of half g at COLS + 128 g + 16 c. */
const COLS = memory.data(256, 16);

/** The 8 x 8 int16 matrix of 8 rows of 16 bytes at s, transposed into d (row c: column c). */
function transposeHalf(s: usize, d: usize): void {
  const r0 = v128.load(s);
  const r1 = v128.load(s, 16);
  const r2 = v128.load(s, 32);
  const r3 = v128.load(s, 48);
  const r4 = v128.load(s, 64);
  const r5 = v128.load(s, 80);
  const r6 = v128.load(s, 96);
  const r7 = v128.load(s, 112);
  const a0 = v128.shuffle<i16>(r0, r1, 0, 8, 1, 9, 2, 10, 3, 11);
  const a1 = v128.shuffle<i16>(r0, r1, 4, 12, 5, 13, 6, 14, 7, 15);
  const a2 = v128.shuffle<i16>(r2, r3, 0, 8, 1, 9, 2, 10, 3, 11);
  const a3 = v128.shuffle<i16>(r2, r3, 4, 12, 5, 13, 6, 14, 7, 15);
  const a4 = v128.shuffle<i16>(r4, r5, 0, 8, 1, 9, 2, 10, 3, 11);
  const a5 = v128.shuffle<i16>(r4, r5, 4, 12, 5, 13, 6, 14, 7, 15);
  const a6 = v128.shuffle<i16>(r6, r7, 0, 8, 1, 9, 2, 10, 3, 11);
  const a7 = v128.shuffle<i16>(r6, r7, 4, 12, 5, 13, 6, 14, 7, 15);
  const b0 = v128.shuffle<i32>(a0, a2, 0, 4, 1, 5); // columns 0, 1 of rows 0..3
  const b1 = v128.shuffle<i32>(a0, a2, 2, 6, 3, 7); // 2, 3
  const b2 = v128.shuffle<i32>(a1, a3, 0, 4, 1, 5); // 4, 5
  const b3 = v128.shuffle<i32>(a1, a3, 2, 6, 3, 7); // 6, 7
  const b4 = v128.shuffle<i32>(a4, a6, 0, 4, 1, 5); // the same of rows 4..7
  const b5 = v128.shuffle<i32>(a4, a6, 2, 6, 3, 7);
  const b6 = v128.shuffle<i32>(a5, a7, 0, 4, 1, 5);
  const b7 = v128.shuffle<i32>(a5, a7, 2, 6, 3, 7);
  v128.store(d, v128.shuffle<i64>(b0, b4, 0, 2));
  v128.store(d, v128.shuffle<i64>(b0, b4, 1, 3), 16);
  v128.store(d, v128.shuffle<i64>(b1, b5, 0, 2), 32);
  v128.store(d, v128.shuffle<i64>(b1, b5, 1, 3), 48);
  v128.store(d, v128.shuffle<i64>(b2, b6, 0, 2), 64);
  v128.store(d, v128.shuffle<i64>(b2, b6, 1, 3), 80);
  v128.store(d, v128.shuffle<i64>(b3, b7, 0, 2), 96);
  v128.store(d, v128.shuffle<i64>(b3, b7, 1, 3), 112);
}
