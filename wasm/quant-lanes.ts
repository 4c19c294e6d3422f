/**
 * Q6_K in lane order (Q6_K_LANES, wasm/quant-types.ts), the relaxed build's resident form of Q6_K
 * matrices (shared/model/quant.ts describes the layout and packs it at load): the same 210 bytes
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

import { isum, isum4 } from "./quant-dot";
import { h2f, h2f4 } from "./quant-f16";
import { dot2, q6Scales } from "./quant-relaxed";

/** Value index of lane position L (the header's map), for toLaneOrder. */
function laneValue(l: i32): i32 {
  const p = l >> 6;
  const k = (l >> 4) & 3;
  const i = l & 15;
  return ((i >> 1) << 4) + ((k >> 1) << 7) + ((p << 2) | ((k & 1) << 1)) + (i & 1);
}

/** 256 bytes of scratch for toLaneOrder. */
const TMP = memory.data(256, 16);

/** Low six bits and top two bits of every byte. */
const M63 = memory.data<u8>([63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63]);

/** Puts the q of each Q8_K block (292 bytes) of the activation row at a (n values) in lane order. */
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
 * and spill them (1.2x measured).
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

/** The block's scales as int16 (q6Scales' destination), then one block's partials (dotQ6_KLr). */
const SC = memory.data(48, 16);

/**
 * Lane-order Q6_K rows w, w + wr, w + 2 wr, w + 3 wr against the lane-order Q8_K activation row a
 * into o .. o + 12, with n / 4 bytes of scratch at p: as dotQ6_Kr4 (the integer sums row after
 * row, then the epilogue per block in lanes).
 */
export function dotQ6_KLr4(w: usize, wr: usize, a: usize, n: i32, o: usize, p: usize): void {
  const nb = <usize>(n >> 8);
  for (let r: usize = 0, wj = w; r < 64; r += 16) {
    for (let b: usize = 0; b < nb; b++, wj += 210) laneBlock(wj, a + b * 292, p + (b << 6) + r, SC);
  }
  let acc = f32x4.splat(0);
  for (let b: usize = 0; b < nb; b++, w += 210, a += 292, p += 64) {
    const s = isum4(v128.load(p), v128.load(p, 16), v128.load(p, 32), v128.load(p, 48));
    let h = i32x4.splat(load<u16>(w, 208));
    h = i32x4.replace_lane(h, 1, load<u16>(w + wr, 208));
    h = i32x4.replace_lane(h, 2, load<u16>(w + 2 * wr, 208));
    h = i32x4.replace_lane(h, 3, load<u16>(w + 3 * wr, 208));
    const dd = f32x4.mul(h2f4(h), f32x4.splat(load<f32>(a)));
    acc = f32x4.add(acc, f32x4.mul(dd, f32x4.convert_i32x4_s(s)));
  }
  v128.store(o, acc);
}

/** One lane-order Q6_K row against the lane-order Q8_K activation row a: dotQ6_Kr's value. */
export function dotQ6_KLr(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const t = SC + 32;
  for (let b = 0; b < n >> 8; b++, w += 210, a += 292) {
    laneBlock(w, a, t, SC);
    acc += h2f(load<u16>(w, 208)) * load<f32>(a) * <f32>isum(v128.load(t));
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
