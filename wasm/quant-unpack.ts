/**
 * Unpacked weight rows for batches (wasm/quant.ts): K-quant and Q4_0 rows unpacked to int8 once
 * and dotted with every activation row, with the same integer sums and float steps as the packed
 * dots of wasm/quant-dot.ts.
 */

import { f4at, h2f4at, hiNibbles, isum, isum4, q4kScaleBytes } from "./quant-dot";
import { h2f } from "./quant-f16";
import { Q4_0, Q5_K, Q6_K } from "./quant-types";

// ---------------------------------------------------------------------------------------------
// Unpacked weight rows (batches of two or more activation rows)
//
// With m >= 2 rows, a Q4_0, Q4_K, Q5_K or Q6_K weight row is unpacked once into plain int8 values (and
// its scales), or four F16 rows are widened to f32 (in matmulQ), and then dotted with every
// activation row. The integer sums are the same exact
// numbers and the float operations the same, so the result is bit-identical to the packed path.
// The unpacked row lives in the attention scratch of wasm/kernels.ts (the 128 KiB just above the
// static data): the two never run at once.

export const UNPACK_BYTES: usize = 128 << 10;

export function unpackBase(): usize {
  return (__heap_base + 15) & ~15;
}

/** Bytes of one unpacked row: Q4_0 as Q8_0 blocks (34 a block); K-quants 560 a block (unpackK). */
export function unpackedBytes(type: i32, n: i32): usize {
  return type === Q4_0 ? <usize>(n / 32) * 34 : <usize>(n / 256) * K_UNPACKED;
}

/** Q4_0 row -> Q8_0 blocks (f16 d, int8 q[32] = nibble - 8). */
export function unpackQ4_0(w: usize, u: usize, n: i32): void {
  for (let b = 0; b < n / 32; b++, w += 18, u += 34) {
    store<u16>(u, load<u16>(w));
    const q = v128.load(w + 2);
    v128.store(u + 2, i8x16.sub(v128.and(q, i8x16.splat(0x0f)), i8x16.splat(8)));
    v128.store(u + 18, i8x16.sub(hiNibbles(q), i8x16.splat(8)));
  }
}

/**
 * K-quant block -> int16 w[256], each quant times its sub-block's scale (Q4_K, Q5_K: q * sc;
 * Q6_K: (q - 32) * sc; at most 31 * 63 or 32 * 128 in magnitude), then (Q4_K, Q5_K) i32 mn[8],
 * then f32 d, f32 dmin (Q4_K, Q5_K). A block's integer sum sum_g sc_g * dot_g is then one
 * int16 dot product with its activations (the same integer: |w * q_x| sums stay below 2^31).
 */
export function unpackK(type: i32, w: usize, u: usize, n: i32): void {
  const lo = i8x16.splat(0x0f);
  const tmp = PART;
  for (let b = 0; b < n / 256; b++, u += K_UNPACKED) {
    if (type !== Q6_K) {
      const five = type === Q5_K;
      const qs: usize = five ? 48 : 16;
      const one = i8x16.splat(1);
      const scb = q4kScaleBytes(w + 4);
      v128.store(tmp, scb);
      for (let c: usize = 0; c < 4; c++) {
        const se = i16x8.splat(<i16>load<u8>(tmp + 2 * c));
        const so = i16x8.splat(<i16>load<u8>(tmp + 2 * c + 1));
        for (let h: usize = 0; h < 32; h += 16) {
          const q = v128.load(w + qs + c * 32 + h);
          let e = v128.and(q, lo);
          let o = hiNibbles(q);
          if (five) {
            const hb = i8x16.shr_u(v128.load(w + 16 + h), (<i32>c) << 1);
            e = v128.or(e, i8x16.shl(v128.and(hb, one), 4));
            o = v128.or(o, i8x16.shl(v128.and(i8x16.shr_u(hb, 1), one), 4));
          }
          const pe = u + ((c * 64 + h) << 1);
          const po = u + ((c * 64 + 32 + h) << 1);
          v128.store(pe, i16x8.mul(i16x8.extend_low_i8x16_u(e), se));
          v128.store(pe, i16x8.mul(i16x8.extend_high_i8x16_u(e), se), 16);
          v128.store(po, i16x8.mul(i16x8.extend_low_i8x16_u(o), so));
          v128.store(po, i16x8.mul(i16x8.extend_high_i8x16_u(o), so), 16);
        }
      }
      storeKMins(u, scb, w);
      w += five ? 176 : 144;
    } else {
      const three = i8x16.splat(3);
      const off = i8x16.splat(32);
      for (let h: usize = 0; h < 2; h++) {
        const ql = w + h * 64;
        const qh = w + 128 + h * 32;
        const sc = w + 192 + h * 8;
        const o = u + h * 256;
        for (let l: usize = 0; l < 32; l += 16) {
          const qa = v128.load(ql + l);
          const qb = v128.load(ql + 32 + l);
          const hb = v128.load(qh + l);
          const q1 = v128.or(v128.and(qa, lo), i8x16.shl(v128.and(hb, three), 4));
          const q2 = v128.or(v128.and(qb, lo), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4));
          const q3 = v128.or(hiNibbles(qa), i8x16.shl(v128.and(hiNibbles(hb), three), 4));
          const q4 = v128.or(hiNibbles(qb), i8x16.shl(i8x16.shr_u(hb, 6), 4));
          // value 32k + l + i of the half lies in sub-block 2k + l / 16
          store6(o + (l << 1), i8x16.sub(q1, off), load<i8>(sc + (l >> 4)));
          store6(o + ((32 + l) << 1), i8x16.sub(q2, off), load<i8>(sc + 2 + (l >> 4)));
          store6(o + ((64 + l) << 1), i8x16.sub(q3, off), load<i8>(sc + 4 + (l >> 4)));
          store6(o + ((96 + l) << 1), i8x16.sub(q4, off), load<i8>(sc + 6 + (l >> 4)));
        }
      }
      store<f32>(u + 544, h2f(load<u16>(w + 208)));
      w += 210;
    }
  }
}

/** 16 signed bytes q times the scale s, as 16 int16 at p. */
function store6(p: usize, q: v128, s: i8): void {
  const sv = i16x8.splat(<i16>s);
  v128.store(p, i16x8.mul(i16x8.extend_low_i8x16_s(q), sv));
  v128.store(p, i16x8.mul(i16x8.extend_high_i8x16_s(q), sv), 16);
}

/** Bytes of one unpacked K-quant block (unpackK). */
const K_UNPACKED: usize = 560;

/** Scratch for a Q4_K/Q5_K block's scale bytes (unpackK). */
const PART = memory.data(64, 16);

/** i32x4 partial sums of an unpacked block's 256 int16 at u times the 256 int8 activations at x. */
function blockSum(u: usize, x: usize): v128 {
  let s = i32x4.splat(0);
  for (let k: usize = 0; k < 256; k += 16) {
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load(u + (k << 1)), v128.load8x8_s(x + k)));
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load(u + (k << 1), 16), v128.load8x8_s(x + k, 8)));
  }
  return s;
}

/** [sum_j mn_j * (bsum_2j + bsum_2j+1)] as i32x4 partials: one unpacked Q4_K/Q5_K block. */
export function blockMins(u: usize, bs: usize): v128 {
  return i32x4.add(
    i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs)), v128.load(u + 512)),
    i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs, 16)), v128.load(u + 528)),
  );
}

/** An unpacked K-quant row against a Q8_K activation row: the sums and order of dotQ4_K/dotQ6_K. */
export function dotUnpackedK(type: i32, u: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  for (let b = 0; b < n / 256; b++, u += K_UNPACKED, a += 292) {
    const s = isum(blockSum(u, a + 4));
    const dx = load<f32>(a);
    acc += load<f32>(u + 544) * dx * <f32>s;
    if (type !== Q6_K) acc -= load<f32>(u + 548) * dx * <f32>isum(blockMins(u, a + 260));
  }
  return acc;
}

/**
 * dotUnpackedK of four unpacked rows (u, u + ub, u + 2 ub, u + 3 ub) with one activation row, into
 * o .. o + 12: the activations widened once for the four rows, each row's integer sums as in
 * dotUnpackedK, reduced together (isum4), and the float steps done lane-wise, lane r being row r,
 * in dotUnpackedK's order.
 */
export function dotUnpackedKx4(type: i32, u: usize, ub: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n / 256; b++, u += K_UNPACKED, a += 292) {
    let s0 = i32x4.splat(0);
    let s1 = i32x4.splat(0);
    let s2 = i32x4.splat(0);
    let s3 = i32x4.splat(0);
    for (let k: usize = 0; k < 256; k += 16) {
      const xl = v128.load8x8_s(a + 4 + k);
      const xh = v128.load8x8_s(a + 12 + k);
      const p = u + (k << 1);
      s0 = i32x4.add(s0, i32x4.dot_i16x8_s(v128.load(p), xl));
      s0 = i32x4.add(s0, i32x4.dot_i16x8_s(v128.load(p, 16), xh));
      s1 = i32x4.add(s1, i32x4.dot_i16x8_s(v128.load(p + ub), xl));
      s1 = i32x4.add(s1, i32x4.dot_i16x8_s(v128.load(p + ub, 16), xh));
      s2 = i32x4.add(s2, i32x4.dot_i16x8_s(v128.load(p + 2 * ub), xl));
      s2 = i32x4.add(s2, i32x4.dot_i16x8_s(v128.load(p + 2 * ub, 16), xh));
      s3 = i32x4.add(s3, i32x4.dot_i16x8_s(v128.load(p + 3 * ub), xl));
      s3 = i32x4.add(s3, i32x4.dot_i16x8_s(v128.load(p + 3 * ub, 16), xh));
    }
    acc = kBlock4(acc, type, u, ub, a, isum4(s0, s1, s2, s3));
  }
  v128.store(o, acc);
}

/**
 * An unpacked Q4_K/Q5_K block's tail (both builds' K-row unpacking): the eight sub-block mins
 * (the high half of `scb`) as int32 at u + 512, then f32 d and dmin at u + 544 and u + 548.
 */
export function storeKMins(u: usize, scb: v128, w: usize): void {
  const mn16 = i16x8.extend_high_i8x16_u(scb);
  v128.store(u + 512, i32x4.extend_low_i16x8_u(mn16));
  v128.store(u + 528, i32x4.extend_high_i16x8_u(mn16));
  store<f32>(u + 544, h2f(load<u16>(w)));
  store<f32>(u + 548, h2f(load<u16>(w + 2)));
}

/**
 * One super-block's step of the four-row K-quant sums (`dotUnpackedKx4` and its relaxed twin):
 * `s` the rows' integer sums, lane r row r; adds d * dx * s and, but for Q6_K, takes off
 * dmin * dx * the rows' block-min terms.
 */
export function kBlock4(acc: v128, type: i32, u: usize, ub: usize, a: usize, s: v128): v128 {
  const dx = f32x4.splat(load<f32>(a));
  acc = f32x4.add(acc, f32x4.mul(f32x4.mul(f4at(u + 544, ub), dx), f32x4.convert_i32x4_s(s)));
  if (type === Q6_K) return acc;
  const bs = a + 260;
  const m = isum4(
    blockMins(u, bs),
    blockMins(u + ub, bs),
    blockMins(u + 2 * ub, bs),
    blockMins(u + 3 * ub, bs),
  );
  return f32x4.sub(acc, f32x4.mul(f32x4.mul(f4at(u + 548, ub), dx), f32x4.convert_i32x4_s(m)));
}

// ---------------------------------------------------------------------------------------------
// Q4_0: four weight rows prepared once for a batch (Q8_0: wasm/quant-prepared.ts)

/** Bytes of four prepared Q4_0 rows of n values: per block 4 x 32 int8, then 4 f32 scales. */
export function prepared4Bytes(n: i32): usize {
  return <usize>(n >> 5) * 144;
}

/**
 * Prepares four Q4_0 weight rows (at w, w + wr, w + 2 wr, w + 3 wr) for `dotPrepared4` (the
 * relaxed build: wasm/quant-relaxed-batch.ts's dotQ4x4r): block by block, each row's 32 quants
 * as int8 (nibble - 8; the relaxed build keeps the nibbles 0..15), then the four rows' scales d
 * as f32 (exact), so that neither is redone for every activation row.
 */
export function prepare4(w: usize, wr: usize, n: i32, p: usize): void {
  const lo = i8x16.splat(0x0f);
  const eight = i8x16.splat(ASC_FEATURE_RELAXED_SIMD ? 0 : 8);
  for (let b = 0; b < n >> 5; b++, w += 18, p += 144) {
    for (let r: usize = 0; r < 4; r++) {
      const q = v128.load(w + r * wr, 2);
      v128.store(p + (r << 5), i8x16.sub(v128.and(q, lo), eight));
      v128.store(p + (r << 5), i8x16.sub(hiNibbles(q), eight), 16);
    }
    v128.store(p, h2f4at(w, wr), 128);
  }
}

/**
 * Four prepared rows (`prepare4`) against one Q8_0 activation row a, into o .. o + 12: lane r is
 * row r, acc_r = acc_r + f32(s_r) * (d_w,r * d_x) block by block, as dotQ8 (wasm/quant-dot.ts).
 * The block's activations are widened to i16 once for the four rows.
 */
export function dotPrepared4(p: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n >> 5; b++, p += 144, a += 36) {
    const x0 = v128.load8x8_s(a, 4);
    const x1 = v128.load8x8_s(a, 12);
    const x2 = v128.load8x8_s(a, 20);
    const x3 = v128.load8x8_s(a, 28);
    const s = isum4(
      dotPrepared(p, x0, x1, x2, x3),
      dotPrepared(p + 32, x0, x1, x2, x3),
      dotPrepared(p + 64, x0, x1, x2, x3),
      dotPrepared(p + 96, x0, x1, x2, x3),
    );
    const dd = f32x4.mul(v128.load(p, 128), v128.load32_splat(a));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  v128.store(o, acc);
}

/** i32x4 partial sums of 32 prepared int8 weights at q times the widened activations x0..x3. */
function dotPrepared(q: usize, x0: v128, x1: v128, x2: v128, x3: v128): v128 {
  return i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load8x8_s(q), x0),
      i32x4.dot_i16x8_s(v128.load8x8_s(q, 8), x1),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load8x8_s(q, 16), x2),
      i32x4.dot_i16x8_s(v128.load8x8_s(q, 24), x3),
    ),
  );
}
