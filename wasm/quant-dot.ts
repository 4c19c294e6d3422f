/**
 * Dot products of packed quantised weight rows (Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K) with one
 * quantised activation row, for wasm/quant.ts: exact integer sums, then the float steps in the
 * order of shared/model/kernels-quant-js.ts.
 */

import { dotF16, h2f, h2f4 } from "./quant-f16";
import { F16, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K, Q8_0 } from "./quant-types";

// ---------------------------------------------------------------------------------------------
// Dot products of one weight row and one activation row
//
// Integer sums: bytes widened to i16 (v128.load8x8_s or extend) and multiplied pairwise with
// i32x4.dot_i16x8_s, or (dot32) i16x8.extmul of signed bytes, added as i16 while they cannot
// overflow (|q_w| <= 128, |q_x| <= 127) and widened with extadd_pairwise. Several sums are reduced
// together (isum4: four blocks of one row, or one block of four rows) and their float products
// formed lane-wise, then added to each row's accumulator in block order: the same rounded
// operations, in the same order, as the scalar reference.

/** i32x4 partial sums of the products of 32 signed bytes at w and a (exact). */
export function dot32(w0: v128, w1: v128, a0: v128, a1: v128): v128 {
  const p0 = i16x8.add(i16x8.extmul_low_i8x16_s(w0, a0), i16x8.extmul_high_i8x16_s(w0, a0));
  const p1 = i16x8.add(i16x8.extmul_low_i8x16_s(w1, a1), i16x8.extmul_high_i8x16_s(w1, a1));
  return i32x4.add(i32x4.extadd_pairwise_i16x8_s(p0), i32x4.extadd_pairwise_i16x8_s(p1));
}

/** [sum a, sum b, sum c, sum d] (exact). */
export function isum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 2, 4, 6), v128.shuffle<i32>(a, b, 1, 3, 5, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 2, 4, 6), v128.shuffle<i32>(c, d, 1, 3, 5, 7));
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 2, 4, 6), v128.shuffle<i32>(ab, cd, 1, 3, 5, 7));
}

export function isum(v: v128): i32 {
  return (
    i32x4.extract_lane(v, 0) +
    i32x4.extract_lane(v, 1) +
    i32x4.extract_lane(v, 2) +
    i32x4.extract_lane(v, 3)
  );
}

/** acc + p0 + p1 + p2 + p3, in that order. */
export function addLanes(acc: f32, p: v128): f32 {
  acc += f32x4.extract_lane(p, 0);
  acc += f32x4.extract_lane(p, 1);
  acc += f32x4.extract_lane(p, 2);
  return acc + f32x4.extract_lane(p, 3);
}

/** The four lanes of v stored at o, o + os, o + 2 os, o + 3 os. */
export function storeLanes(o: usize, os: usize, v: v128): void {
  store<f32>(o, f32x4.extract_lane(v, 0));
  store<f32>(o + os, f32x4.extract_lane(v, 1));
  store<f32>(o + 2 * os, f32x4.extract_lane(v, 2));
  store<f32>(o + 3 * os, f32x4.extract_lane(v, 3));
}

/** Four halves at p, p + stride, p + 2 stride, p + 3 stride, as f32x4. */
export function h2f4at(p: usize, stride: usize): v128 {
  let v = i32x4.splat(load<u16>(p));
  v = i32x4.replace_lane(v, 1, load<u16>(p + stride));
  v = i32x4.replace_lane(v, 2, load<u16>(p + 2 * stride));
  return h2f4(i32x4.replace_lane(v, 3, load<u16>(p + 3 * stride)));
}

/** Four f32 at p, p + stride, p + 2 stride, p + 3 stride. */
export function f4at(p: usize, stride: usize): v128 {
  let v = f32x4.splat(load<f32>(p));
  v = f32x4.replace_lane(v, 1, load<f32>(p + stride));
  v = f32x4.replace_lane(v, 2, load<f32>(p + 2 * stride));
  return f32x4.replace_lane(v, 3, load<f32>(p + 3 * stride));
}

/** Integer sums of Q8_0 or Q4_0 block b (weights at w, activations at a) as i32x4 partials. */
function blockQ8(q4: bool, w: usize, a: usize): v128 {
  if (q4) {
    const q = v128.load(w + 2);
    const q0 = i8x16.sub(v128.and(q, i8x16.splat(0x0f)), i8x16.splat(8));
    const q1 = i8x16.sub(hiNibbles(q), i8x16.splat(8));
    return dot32(q0, q1, v128.load(a + 4), v128.load(a + 20));
  }
  return dot32(v128.load(w + 2), v128.load(w + 18), v128.load(a + 4), v128.load(a + 20));
}

/** Q8_0 (bw 34) or Q4_0 (bw 18) weights against Q8_0 activations. */
export function dotQ8(q4: bool, w: usize, a: usize, n: i32): f32 {
  const bw: usize = q4 ? 18 : 34;
  const nb = n / 32;
  let acc: f32 = 0;
  let b = 0;
  for (; b + 4 <= nb; b += 4, w += 4 * bw, a += 144) {
    const s = isum4(
      blockQ8(q4, w, a),
      blockQ8(q4, w + bw, a + 36),
      blockQ8(q4, w + 2 * bw, a + 72),
      blockQ8(q4, w + 3 * bw, a + 108),
    );
    const dd = f32x4.mul(h2f4at(w, bw), f4at(a, 36));
    acc = addLanes(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  for (; b < nb; b++, w += bw, a += 36) {
    acc += <f32>isum(blockQ8(q4, w, a)) * (h2f(load<u16>(w)) * load<f32>(a));
  }
  return acc;
}

/**
 * i32x4 partial sums of a block's 32 int8 weights times its 32 activations widened to i16 (x0..x3,
 * 8 values each): the Q8_0 weights loaded and widened in one step, Q4_0's nibbles unpacked (exact).
 */
function blockQ8x(q4: bool, w: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  let w0: v128;
  let w1: v128;
  let w2: v128;
  let w3: v128;
  if (q4) {
    const q = v128.load(w + 2);
    const lo = i8x16.sub(v128.and(q, i8x16.splat(0x0f)), i8x16.splat(8));
    const hi = i8x16.sub(hiNibbles(q), i8x16.splat(8));
    w0 = i16x8.extend_low_i8x16_s(lo);
    w1 = i16x8.extend_high_i8x16_s(lo);
    w2 = i16x8.extend_low_i8x16_s(hi);
    w3 = i16x8.extend_high_i8x16_s(hi);
  } else {
    w0 = v128.load8x8_s(w + 2);
    w1 = v128.load8x8_s(w + 10);
    w2 = v128.load8x8_s(w + 18);
    w3 = v128.load8x8_s(w + 26);
  }
  return i32x4.add(
    i32x4.add(i32x4.dot_i16x8_s(w0, x0), i32x4.dot_i16x8_s(w1, x1)),
    i32x4.add(i32x4.dot_i16x8_s(w2, x2), i32x4.dot_i16x8_s(w3, x3)),
  );
}

/**
 * dotQ8 of four weight rows (w, w + wr, w + 2 wr, w + 3 wr) with one Q8_0 activation row, into
 * o, o + 4, o + 8, o + 12. Each activation block is widened to i16 once for the four rows; the four
 * rows' block sums are reduced together (isum4) and their float products formed lane-wise, lane r
 * being row r: acc_r = acc_r + f32(s_r) * (d_w,r * d_x), block by block, as in dotQ8.
 */
export function dotQ8x4(q4: bool, w: usize, wr: usize, a: usize, n: i32, o: usize): void {
  const bw: usize = q4 ? 18 : 34;
  const nb = n / 32;
  let acc = f32x4.splat(0);
  for (let b = 0; b < nb; b++, w += bw, a += 36) {
    const x0 = v128.load8x8_s(a + 4);
    const x1 = v128.load8x8_s(a + 12);
    const x2 = v128.load8x8_s(a + 20);
    const x3 = v128.load8x8_s(a + 28);
    const s = isum4(
      blockQ8x(q4, w, x0, x1, x2, x3),
      blockQ8x(q4, w + wr, x0, x1, x2, x3),
      blockQ8x(q4, w + 2 * wr, x0, x1, x2, x3),
      blockQ8x(q4, w + 3 * wr, x0, x1, x2, x3),
    );
    const dd = f32x4.mul(h2f4at(w, wr), f32x4.splat(load<f32>(a)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  v128.store(o, acc);
}

/** Q4_1 weights against Q8_1 activations: the nibble sums, then the min times s_x. */
function dotQ4_1(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  for (let b = 0; b < n / 32; b++, w += 20, a += 40) {
    const q = v128.load(w + 4);
    const s = isum(dot32(v128.and(q, lo), hiNibbles(q), v128.load(a + 8), v128.load(a + 24)));
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(a));
    acc += h2f(load<u16>(w + 2)) * load<f32>(a + 4);
  }
  return acc;
}

/**
 * The eight 6-bit scales and eight 6-bit mins of a Q4_K/Q5_K block (12 bytes at `p`) as 16 bytes:
 * scales 0..7, then mins 0..7 (quant.ts q4kScale and q4kMin, four at a time in 32-bit words).
 */
export function q4kScaleBytes(p: usize): v128 {
  const u0 = load<u32>(p);
  const u1 = load<u32>(p + 4);
  const u2 = load<u32>(p + 8);
  let v = i32x4.splat(u0 & 0x3f3f3f3f);
  v = i32x4.replace_lane(v, 1, (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4));
  v = i32x4.replace_lane(v, 2, u1 & 0x3f3f3f3f);
  return i32x4.replace_lane(v, 3, ((u2 >> 4) & 0x0f0f0f0f) | (((u1 >> 6) & 0x03030303) << 4));
}

/**
 * i32x4 partial sums of 32 unsigned weights (w0, w1: 16 bytes each, 0..31) times the 32 int8
 * activations at x, both widened to i16 (exact).
 */
function dot32u(w0: v128, w1: v128, x: usize): v128 {
  return i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(w0), v128.load8x8_s(x)),
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(w0), v128.load8x8_s(x + 8)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(w1), v128.load8x8_s(x + 16)),
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(w1), v128.load8x8_s(x + 24)),
    ),
  );
}

/** Q4_K, or Q5_K with `five` (qh[32] at 16, nibbles at 48, a fifth bit per value). */
function dotQ4_K(five: bool, w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  const one = i8x16.splat(1);
  const bw: usize = five ? 176 : 144;
  const qs: usize = five ? 48 : 16;
  for (let b = 0; b < n / 256; b++, w += bw, a += 292) {
    // sub-block sums: chunk c of 64 values has its low nibbles (sub-block 2c) and high (2c + 1)
    let t0: v128 = i32x4.splat(0);
    let t1: v128 = i32x4.splat(0);
    let t2: v128 = i32x4.splat(0);
    let t3: v128 = i32x4.splat(0);
    let u0: v128 = i32x4.splat(0);
    let u1: v128 = i32x4.splat(0);
    let u2: v128 = i32x4.splat(0);
    let u3: v128 = i32x4.splat(0);
    for (let c = 0; c < 4; c++) {
      const qa = v128.load(w + qs + c * 32);
      const qb = v128.load(w + qs + 16 + c * 32);
      const ap = a + 4 + c * 64;
      let ea = v128.and(qa, lo);
      let eb = v128.and(qb, lo);
      let oa = hiNibbles(qa);
      let ob = hiNibbles(qb);
      if (five) {
        const ha = i8x16.shr_u(v128.load(w + 16), 2 * c);
        const hb = i8x16.shr_u(v128.load(w + 32), 2 * c);
        ea = v128.or(ea, i8x16.shl(v128.and(ha, one), 4));
        eb = v128.or(eb, i8x16.shl(v128.and(hb, one), 4));
        oa = v128.or(oa, i8x16.shl(v128.and(i8x16.shr_u(ha, 1), one), 4));
        ob = v128.or(ob, i8x16.shl(v128.and(i8x16.shr_u(hb, 1), one), 4));
      }
      const even = dot32u(ea, eb, ap);
      const odd = dot32u(oa, ob, ap + 32);
      if (c === 0) {
        t0 = even;
        t1 = odd;
      } else if (c === 1) {
        t2 = even;
        t3 = odd;
      } else if (c === 2) {
        u0 = even;
        u1 = odd;
      } else {
        u2 = even;
        u3 = odd;
      }
    }
    const scb = q4kScaleBytes(w + 4);
    const sc16 = i16x8.extend_low_i8x16_u(scb);
    const mn16 = i16x8.extend_high_i8x16_u(scb);
    const sums = i32x4.add(
      i32x4.mul(isum4(t0, t1, t2, t3), i32x4.extend_low_i16x8_u(sc16)),
      i32x4.mul(isum4(u0, u1, u2, u3), i32x4.extend_high_i16x8_u(sc16)),
    );
    const s = isum(sums);
    // bsums pairs of sub-blocks 0..7: extadd_pairwise of the 16 int16 bsums
    const bs = a + 260;
    const m = isum(
      i32x4.add(
        i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs)), i32x4.extend_low_i16x8_u(mn16)),
        i32x4.mul(
          i32x4.extadd_pairwise_i16x8_s(v128.load(bs + 16)),
          i32x4.extend_high_i16x8_u(mn16),
        ),
      ),
    );
    const dx = load<f32>(a);
    acc += h2f(load<u16>(w)) * dx * <f32>s;
    acc -= h2f(load<u16>(w + 2)) * dx * <f32>m;
  }
  return acc;
}

/** The high nibble of each byte (a 16-bit shift and a mask: no bits cross between bytes). */
export function hiNibbles(q: v128): v128 {
  return v128.and(i16x8.shr_u(q, 4), i8x16.splat(0x0f));
}

/**
 * i32x4 partial sums of 16 values q (0..63, the unsigned 6-bit quants) times the 16 int8
 * activations at x (exact).
 */
function dot16u(q: v128, x: usize): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q), v128.load8x8_s(x)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q), v128.load8x8_s(x, 8)),
  );
}

/**
 * Byte masks 0x0f and 0x30, 16 lanes each, in memory: V8 rebuilds a `v128.const` with several
 * instructions at every use inside a loop, whereas a load from a constant address is one.
 */
const MASKS = memory.data<u8>([
  15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 48, 48, 48, 48, 48, 48, 48, 48,
  48, 48, 48, 48, 48, 48, 48, 48,
]);

/**
 * Byte indices into a Q6_K block's 16 scales for pass j of dotQ6_K: the scales of sub-blocks
 * 8h + p, 8h + 2 + p, 8h + 4 + p, 8h + 6 + p (h = j >> 1, p = j & 1), in bytes 0..3.
 */
const Q6_SCALE_IDX = memory.data<u8>([
  0, 2, 4, 6, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 1, 3, 5, 7, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 8, 10, 12, 14, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 9, 11, 13,
  15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
]);

/**
 * Q6_K weights against Q8_K activations. The block sum s = sum_g sc_g * sum (q - 32) * x is
 * formed as sum_g sc_g * sum q * x - 32 * sum_g sc_g * bsum_g (exact integers, the same s), in
 * four passes of 64 values (a loop, so that each pass's registers are free for the next).
 */
function dotQ6_K(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const nb = n >> 8;
  for (let b = 0; b < nb; b++, w += 210, a += 292) {
    const sc = v128.load(w, 192);
    let total = i32x4.shl(
      i32x4.add(
        i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(sc), v128.load(a, 260)),
        i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(sc), v128.load(a, 276)),
      ),
      5,
    );
    total = i32x4.sub(i32x4.splat(0), total);
    for (let j: usize = 0; j < 4; j++) {
      // pass j: 16 bytes of ql (at 64h + 16p and 32 further) and of qh (128 + 32h + 16p); value
      // 32k + 16p + i of half h lies in sub-block 8h + 2k + p
      const h = j >> 1;
      const p = (j & 1) << 4;
      const ql = w + (h << 6) + p;
      const qh = w + (h << 5) + p;
      const x = a + (h << 7) + p;
      const m4 = v128.load(MASKS);
      const m30 = v128.load(MASKS, 16);
      const qa = v128.load(ql);
      const qb = v128.load(ql, 32);
      const hb = v128.load(qh, 128);
      const d0 = dot16u(v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30)), x + 4);
      const d1 = dot16u(v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30)), x + 36);
      const d2 = dot16u(v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30)), x + 68);
      const d3 = dot16u(
        v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30)),
        x + 100,
      );
      const s = i32x4.extend_low_i16x8_s(
        i16x8.extend_low_i8x16_s(i8x16.swizzle(sc, v128.load(Q6_SCALE_IDX + (j << 4)))),
      );
      total = i32x4.add(total, i32x4.mul(isum4(d0, d1, d2, d3), s));
    }
    acc += h2f(load<u16>(w, 208)) * load<f32>(a) * <f32>isum(total);
  }
  return acc;
}

export function dotRow(type: i32, w: usize, a: usize, n: i32): f32 {
  if (type === F16) return dotF16(w, a, n);
  if (type === Q8_0) return dotQ8(false, w, a, n);
  if (type === Q4_0) return dotQ8(true, w, a, n);
  if (type === Q4_1) return dotQ4_1(w, a, n);
  if (type === Q4_K) return dotQ4_K(false, w, a, n);
  if (type === Q5_K) return dotQ4_K(true, w, a, n);
  if (type === Q6_K) return dotQ6_K(w, a, n);
  return NaN; // not reached: the adapter checks the type
}
