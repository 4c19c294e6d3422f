/**
 * Unpacked weight rows for batches (wasm/quant.ts): K-quant and Q4_0 rows unpacked to int8 once
 * and dotted with every activation row, with the same integer sums and float steps as the packed
 * dots of wasm/quant-dot.ts.
 */

import { dot16, dot32, f4at, hiNibbles, isum, isum4, q4kScaleBytes } from "./quant-dot";
import { h2f, h2f4 } from "./quant-f16";
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

/** Bytes of one unpacked row: Q4_0 as Q8_0 blocks (34 a block); K-quants 328 a block. */
export function unpackedBytes(type: i32, n: i32): usize {
  return type === Q4_0 ? <usize>(n / 32) * 34 : <usize>(n / 256) * 328;
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
 * K-quant block -> int8 q[256] (Q4_K: nibbles; Q5_K: 0..31; Q6_K: q - 32), then i32 c[16] (Q4_K,
 * Q5_K: 8 scales then 8 mins; Q6_K: 16 scales), f32 d, f32 dmin (Q4_K, Q5_K).
 */
export function unpackK(type: i32, w: usize, u: usize, n: i32): void {
  const lo = i8x16.splat(0x0f);
  for (let b = 0; b < n / 256; b++, u += 328) {
    if (type !== Q6_K) {
      const five = type === Q5_K;
      const qs: usize = five ? 48 : 16;
      const one = i8x16.splat(1);
      for (let c = 0; c < 4; c++) {
        for (let h: usize = 0; h < 32; h += 16) {
          const q = v128.load(w + qs + c * 32 + h);
          let e = v128.and(q, lo);
          let o = hiNibbles(q);
          if (five) {
            const hb = i8x16.shr_u(v128.load(w + 16 + h), 2 * c);
            e = v128.or(e, i8x16.shl(v128.and(hb, one), 4));
            o = v128.or(o, i8x16.shl(v128.and(i8x16.shr_u(hb, 1), one), 4));
          }
          v128.store(u + c * 64 + h, e);
          v128.store(u + c * 64 + 32 + h, o);
        }
      }
      const scb = q4kScaleBytes(w + 4);
      const sc16 = i16x8.extend_low_i8x16_u(scb);
      const mn16 = i16x8.extend_high_i8x16_u(scb);
      v128.store(u + 256, i32x4.extend_low_i16x8_u(sc16));
      v128.store(u + 272, i32x4.extend_high_i16x8_u(sc16));
      v128.store(u + 288, i32x4.extend_low_i16x8_u(mn16));
      v128.store(u + 304, i32x4.extend_high_i16x8_u(mn16));
      store<f32>(u + 320, h2f(load<u16>(w)));
      store<f32>(u + 324, h2f(load<u16>(w + 2)));
      w += five ? 176 : 144;
    } else {
      const three = i8x16.splat(3);
      const off = i8x16.splat(32);
      for (let h = 0; h < 2; h++) {
        const ql = w + h * 64;
        const qh = w + 128 + h * 32;
        const o = u + h * 128;
        for (let l = 0; l < 32; l += 16) {
          const qa = v128.load(ql + l);
          const qb = v128.load(ql + 32 + l);
          const hb = v128.load(qh + l);
          const q1 = v128.or(v128.and(qa, lo), i8x16.shl(v128.and(hb, three), 4));
          const q2 = v128.or(v128.and(qb, lo), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4));
          const q3 = v128.or(hiNibbles(qa), i8x16.shl(v128.and(hiNibbles(hb), three), 4));
          const q4 = v128.or(hiNibbles(qb), i8x16.shl(i8x16.shr_u(hb, 6), 4));
          v128.store(o + l, i8x16.sub(q1, off));
          v128.store(o + 32 + l, i8x16.sub(q2, off));
          v128.store(o + 64 + l, i8x16.sub(q3, off));
          v128.store(o + 96 + l, i8x16.sub(q4, off));
        }
      }
      for (let j = 0; j < 16; j++) store<i32>(u + 256 + j * 4, <i32>load<i8>(w + 192 + j));
      store<f32>(u + 320, h2f(load<u16>(w + 208)));
      w += 210;
    }
  }
}

/** An unpacked K-quant row against a Q8_K activation row: the sums and order of dotQ4_K/dotQ6_K. */
export function dotUnpackedK(type: i32, u: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  for (let b = 0; b < n / 256; b++, u += 328, a += 292) {
    const x = a + 4;
    let total: v128;
    if (type !== Q6_K) {
      const s0 = isum4(
        dot32(v128.load(u), v128.load(u + 16), v128.load(x), v128.load(x + 16)),
        dot32(v128.load(u + 32), v128.load(u + 48), v128.load(x + 32), v128.load(x + 48)),
        dot32(v128.load(u + 64), v128.load(u + 80), v128.load(x + 64), v128.load(x + 80)),
        dot32(v128.load(u + 96), v128.load(u + 112), v128.load(x + 96), v128.load(x + 112)),
      );
      const s1 = isum4(
        dot32(v128.load(u + 128), v128.load(u + 144), v128.load(x + 128), v128.load(x + 144)),
        dot32(v128.load(u + 160), v128.load(u + 176), v128.load(x + 160), v128.load(x + 176)),
        dot32(v128.load(u + 192), v128.load(u + 208), v128.load(x + 192), v128.load(x + 208)),
        dot32(v128.load(u + 224), v128.load(u + 240), v128.load(x + 224), v128.load(x + 240)),
      );
      const s = isum(
        i32x4.add(i32x4.mul(s0, v128.load(u + 256)), i32x4.mul(s1, v128.load(u + 272))),
      );
      const bs = a + 260;
      const m = isum(
        i32x4.add(
          i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs)), v128.load(u + 288)),
          i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs + 16)), v128.load(u + 304)),
        ),
      );
      const dx = load<f32>(a);
      acc += load<f32>(u + 320) * dx * <f32>s;
      acc -= load<f32>(u + 324) * dx * <f32>m;
    } else {
      total = i32x4.splat(0);
      for (let g: usize = 0; g < 4; g++) {
        const q = u + g * 64;
        const y = x + g * 64;
        const s = isum4(
          dot16(v128.load(q), v128.load(y)),
          dot16(v128.load(q + 16), v128.load(y + 16)),
          dot16(v128.load(q + 32), v128.load(y + 32)),
          dot16(v128.load(q + 48), v128.load(y + 48)),
        );
        total = i32x4.add(total, i32x4.mul(s, v128.load(u + 256 + g * 16)));
      }
      acc += load<f32>(u + 320) * load<f32>(a) * <f32>isum(total);
    }
  }
  return acc;
}

/**
 * dotUnpackedK of four unpacked rows (u, u + ub, u + 2 ub, u + 3 ub) with one activation row, into
 * o .. o + 12: each row's integer sums as in dotUnpackedK, the four rows' sums reduced together
 * (isum4) and the float steps done lane-wise, lane r being row r, in dotUnpackedK's order.
 */
export function dotUnpackedKx4(type: i32, u: usize, ub: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n / 256; b++, u += 328, a += 292) {
    const x = a + 4;
    const dx = f32x4.splat(load<f32>(a));
    if (type !== Q6_K) {
      const bs0 = i32x4.extadd_pairwise_i16x8_s(v128.load(a + 260));
      const bs1 = i32x4.extadd_pairwise_i16x8_s(v128.load(a + 276));
      const s = isum4(
        unpackedKSums(u, x),
        unpackedKSums(u + ub, x),
        unpackedKSums(u + 2 * ub, x),
        unpackedKSums(u + 3 * ub, x),
      );
      const m = isum4(
        unpackedKMins(u, bs0, bs1),
        unpackedKMins(u + ub, bs0, bs1),
        unpackedKMins(u + 2 * ub, bs0, bs1),
        unpackedKMins(u + 3 * ub, bs0, bs1),
      );
      acc = f32x4.add(acc, f32x4.mul(f32x4.mul(f4at(u + 320, ub), dx), f32x4.convert_i32x4_s(s)));
      acc = f32x4.sub(acc, f32x4.mul(f32x4.mul(f4at(u + 324, ub), dx), f32x4.convert_i32x4_s(m)));
    } else {
      const s = isum4(
        unpackedQ6Sums(u, x),
        unpackedQ6Sums(u + ub, x),
        unpackedQ6Sums(u + 2 * ub, x),
        unpackedQ6Sums(u + 3 * ub, x),
      );
      acc = f32x4.add(acc, f32x4.mul(f32x4.mul(f4at(u + 320, ub), dx), f32x4.convert_i32x4_s(s)));
    }
  }
  v128.store(o, acc);
}

/** i32x4 partial sums of `len` (a multiple of 16) int8 at u times int8 at x, widened to i16 (exact). */
function dotWide(u: usize, x: usize, len: usize): v128 {
  let s = i32x4.dot_i16x8_s(v128.load8x8_s(u), v128.load8x8_s(x));
  s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(u + 8), v128.load8x8_s(x + 8)));
  for (let k: usize = 16; k < len; k += 16) {
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(u + k), v128.load8x8_s(x + k)));
    s = i32x4.add(s, i32x4.dot_i16x8_s(v128.load8x8_s(u + k + 8), v128.load8x8_s(x + k + 8)));
  }
  return s;
}

/** i32x4 whose lanes add up to sum_j scale_j * (sub-block j's integer dot): one unpacked Q4_K block. */
function unpackedKSums(u: usize, x: usize): v128 {
  const s0 = isum4(
    dotWide(u, x, 32),
    dotWide(u + 32, x + 32, 32),
    dotWide(u + 64, x + 64, 32),
    dotWide(u + 96, x + 96, 32),
  );
  const s1 = isum4(
    dotWide(u + 128, x + 128, 32),
    dotWide(u + 160, x + 160, 32),
    dotWide(u + 192, x + 192, 32),
    dotWide(u + 224, x + 224, 32),
  );
  return i32x4.add(i32x4.mul(s0, v128.load(u + 256)), i32x4.mul(s1, v128.load(u + 272)));
}

/** i32x4 whose lanes add up to sum_j min_j * (bsums pair j): one unpacked Q4_K block. */
function unpackedKMins(u: usize, bs0: v128, bs1: v128): v128 {
  return i32x4.add(i32x4.mul(bs0, v128.load(u + 288)), i32x4.mul(bs1, v128.load(u + 304)));
}

/** i32x4 whose lanes add up to sum_j scale_j * (sub-block j's integer dot): one unpacked Q6_K block. */
function unpackedQ6Sums(u: usize, x: usize): v128 {
  let total = i32x4.splat(0);
  for (let g: usize = 0; g < 4; g++) {
    const q = u + g * 64;
    const y = x + g * 64;
    const s = isum4(
      dotWide(q, y, 16),
      dotWide(q + 16, y + 16, 16),
      dotWide(q + 32, y + 32, 16),
      dotWide(q + 48, y + 48, 16),
    );
    total = i32x4.add(total, i32x4.mul(s, v128.load(u + 256 + g * 16)));
  }
  return total;
}

// ---------------------------------------------------------------------------------------------
// Q8_0 and Q4_0: four weight rows prepared once for a batch

/** Bytes of four prepared Q8_0/Q4_0 rows of n values: per block 4 x 32 int8, then 4 f32 scales. */
export function prepared4Bytes(n: i32): usize {
  return <usize>(n >> 5) * 144;
}

/**
 * Prepares four Q8_0 (q4 false) or Q4_0 weight rows (at w, w + wr, w + 2 wr, w + 3 wr) for
 * `dotPrepared4`: block by block, each row's 32 int8 quants (Q4_0: nibble - 8), then the four
 * rows' scales d as f32 (exact), so that neither is redone for every activation row.
 */
export function prepare4(q4: bool, w: usize, wr: usize, n: i32, p: usize): void {
  const bw: usize = q4 ? 18 : 34;
  const lo = i8x16.splat(0x0f);
  const eight = i8x16.splat(8);
  for (let b = 0; b < n >> 5; b++, w += bw, p += 144) {
    for (let r: usize = 0; r < 4; r++) {
      const wb = w + r * wr;
      if (q4) {
        const q = v128.load(wb, 2);
        v128.store(p + (r << 5), i8x16.sub(v128.and(q, lo), eight));
        v128.store(p + (r << 5), i8x16.sub(hiNibbles(q), eight), 16);
      } else {
        v128.store(p + (r << 5), v128.load(wb, 2));
        v128.store(p + (r << 5), v128.load(wb, 18), 16);
      }
    }
    v128.store(p, f4h(w, wr), 128);
  }
}

/** Four halves at p, p + stride, p + 2 stride, p + 3 stride, as f32x4 (exact). */
function f4h(p: usize, stride: usize): v128 {
  let v = i32x4.splat(load<u16>(p));
  v = i32x4.replace_lane(v, 1, load<u16>(p + stride));
  v = i32x4.replace_lane(v, 2, load<u16>(p + 2 * stride));
  return h2f4(i32x4.replace_lane(v, 3, load<u16>(p + 3 * stride)));
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
