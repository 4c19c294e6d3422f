/**
 * The single-row quantised matvec of wasm/quant.ts (m = 1: single-stream decode) for Q8_0, Q4_0,
 * Q4_K and Q6_K weights. The activation row is widened to int16 once per call, in the order in
 * which each weight type's quants come apart, so that every weight row's integer sums multiply
 * 16-bit lanes read straight from memory (i32x4.dot_i16x8_s) and no activation is widened again
 * per weight row. The integer sums are the exact numbers of wasm/quant-dot.ts and the float steps
 * the same, in the same order, so the results are bit-identical to `dotRow`.
 *
 * Q4_0 and Q4_K: a 16-bit lane L of packed nibbles holds four values, L & 15, (L >> 4) & 15,
 * (L >> 8) & 15 and L >> 12, so the activations of each 16 values are stored as their 8
 * even-indexed then their 8 odd-indexed ones. Q8_0 and Q6_K keep the natural order.
 */

import { addLanes, h2f4at, isum, isum4, q4kScaleBytes } from "./quant-dot";
import { h2f } from "./quant-f16";
import { dotQ8w4 } from "./quant-matvec-rows4";
import { Q4_0, Q4_K, Q6_K, Q8_0 } from "./quant-types";

/**
 * Masks in memory (V8 rebuilds a `v128.const` with several instructions at every use inside a
 * loop; a load from a constant address is one): 0x000f per 16-bit lane, 0x0f and 0x30 per byte.
 */
export const M = memory.data<u8>([
  15, 0, 15, 0, 15, 0, 15, 0, 15, 0, 15, 0, 15, 0, 15, 0, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
  15, 15, 15, 15, 15, 15, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48, 48,
]);
const NIB16: usize = 0;
export const NIB8: usize = 16;
export const HI2: usize = 32;

/**
 * Byte indices into a Q6_K block's 16 scales for pass j of dotQ6_Kw: the scales of sub-blocks
 * 8h + p, 8h + 2 + p, 8h + 4 + p, 8h + 6 + p (h = j >> 1, p = j & 1), in bytes 0..3.
 */
const Q6_SCALE_IDX = memory.data<u8>([
  0, 2, 4, 6, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 1, 3, 5, 7, 16, 16, 16, 16, 16, 16,
  16, 16, 16, 16, 16, 16, 8, 10, 12, 14, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 9, 11, 13,
  15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
]);

/**
 * Partial sums of four blocks or chunks, stored one at a time: the stores keep V8 from loading
 * every block's operands first and spilling them (it schedules loads in program order and
 * arithmetic as late as it can), since each block's arithmetic must finish before its store.
 */
export const PART = memory.data(128, 16);

/** True for the weight types this matvec handles. */
export function hasMatvec(type: i32): bool {
  return type === Q8_0 || type === Q4_0 || type === Q4_K || type === Q6_K;
}

/**
 * Bytes of a widened row of n values: n int16, then (Q8_0, Q4_0) n / 32 f32 block scales d_x and
 * n / 32 int32 block sums of q.
 */
export function widenedBytes(n: i32): usize {
  return ((<usize>n) << 1) + ((<usize>(n >> 5)) << 3);
}

/**
 * Widens the quantised activation row at `a` (Q8_0 blocks for Q8_0 and Q4_0, Q8_K for Q4_K and
 * Q6_K) to int16 at `u`, in the order of `type` (see the file header); for Q8_0 and Q4_0 also
 * each block's d_x (f32) and sum of q (int32) after the n values.
 */
export function widenRow(type: i32, a: usize, n: i32, u: usize): void {
  const evenOdd = type === Q4_0 || type === Q4_K;
  const k = type === Q4_K || type === Q6_K;
  const vals: usize = k ? 256 : 32;
  const bb: usize = k ? 292 : 36;
  const nb = <usize>n / vals;
  for (let b: usize = 0; b < nb; b++) {
    const q = a + b * bb + 4;
    const o = u + ((b * vals) << 1);
    let sum = i32x4.splat(0);
    for (let i: usize = 0; i < vals; i += 16) {
      let v = v128.load(q + i);
      if (evenOdd) v = i8x16.shuffle(v, v, 0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
      const lo = i16x8.extend_low_i8x16_s(v);
      const hi = i16x8.extend_high_i8x16_s(v);
      v128.store(o + (i << 1), lo);
      v128.store(o + (i << 1), hi, 16);
      sum = i32x4.add(sum, i32x4.extadd_pairwise_i16x8_s(i16x8.add(lo, hi)));
    }
    if (!k) {
      const p = u + ((<usize>n) << 1) + (b << 2);
      store<f32>(p, load<f32>(a + b * bb));
      store<i32>(p + (<usize>n >> 3), isum(sum));
    }
  }
}

/** i32x4 partial sums of one Q8_0 block (weights at w) times its 32 widened activations at x. */
export function block8(w: usize, x: usize): v128 {
  return i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load8x8_s(w, 2), v128.load(x)),
      i32x4.dot_i16x8_s(v128.load8x8_s(w, 10), v128.load(x, 16)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.load8x8_s(w, 18), v128.load(x, 32)),
      i32x4.dot_i16x8_s(v128.load8x8_s(w, 26), v128.load(x, 48)),
    ),
  );
}

/**
 * i32x4 partial sums of one Q4_0 block's nibbles (0..15, weights at w) times its 32 widened
 * activations at x (even/odd order): lane t of the 16 bytes holds values 2t (bits 0..3), 16 + 2t
 * (4..7), 2t + 1 (8..11) and 17 + 2t (12..15).
 */
export function block4(w: usize, x: usize): v128 {
  const q = v128.load(w, 2);
  const m = v128.load(M + NIB16);
  return i32x4.add(
    i32x4.add(
      i32x4.dot_i16x8_s(v128.and(q, m), v128.load(x)),
      i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(q, 8), m), v128.load(x, 16)),
    ),
    i32x4.add(
      i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(q, 4), m), v128.load(x, 32)),
      i32x4.dot_i16x8_s(i16x8.shr_u(q, 12), v128.load(x, 48)),
    ),
  );
}

/**
 * Q8_0 (q4 false) or Q4_0 weights at w against a Q8_0 activation row widened at x: per block
 * acc = acc + f32(s) * (d_w * d_x), four blocks' sums formed at once (Q4_0: s = sum(nibble * q) -
 * 8 * sum(q), the same integer as sum((nibble - 8) * q)).
 */
function dotQ8w(q4: bool, w: usize, x: usize, n: i32): f32 {
  const bw: usize = q4 ? 18 : 34;
  const nb = n >> 5;
  const dxs = x + ((<usize>n) << 1);
  const sums = dxs + (<usize>n >> 3);
  let acc: f32 = 0;
  let b = 0;
  for (; b + 4 <= nb; b += 4) {
    for (let r: usize = 0; r < 64; r += 16, w += bw, x += 64) {
      v128.store(PART + r, q4 ? block4(w, x) : block8(w, x));
    }
    let s = isum4(v128.load(PART), v128.load(PART, 16), v128.load(PART, 32), v128.load(PART, 48));
    if (q4) s = i32x4.sub(s, i32x4.shl(v128.load(sums + ((<usize>b) << 2)), 3));
    const dd = f32x4.mul(h2f4at(w - 4 * bw, bw), v128.load(dxs + ((<usize>b) << 2)));
    acc = addLanes(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  for (; b < nb; b++, w += bw, x += 64) {
    let s = isum(q4 ? block4(w, x) : block8(w, x));
    if (q4) s -= load<i32>(sums + ((<usize>b) << 2)) << 3;
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(dxs + ((<usize>b) << 2)));
  }
  return acc;
}

/**
 * Q4_K weights against the Q8_K activation row a, widened at x (even/odd order): per block, four
 * passes of one 64-value chunk; chunk c's 32 bytes hold sub-block 2c in their low nibbles and
 * 2c + 1 in their high ones. Then the float steps of dotQ4_K (wasm/quant-dot.ts).
 */
function dotQ4_Kw(w: usize, a: usize, x: usize, n: i32): f32 {
  let acc: f32 = 0;
  const nb = n >> 8;
  for (let b = 0; b < nb; b++, w += 144, a += 292, x += 512) {
    const scb = q4kScaleBytes(w + 4);
    const sc16 = i16x8.extend_low_i8x16_u(scb);
    const mn16 = i16x8.extend_high_i8x16_u(scb);
    for (let c: usize = 0; c < 4; c++) {
      // chunk c: 32 bytes of nibbles, 16-bit lanes of bytes 0..15 then 16..31
      const m = v128.load(M + NIB16);
      const q = w + 16 + (c << 5);
      const xc = x + (c << 7);
      let l = v128.load(q);
      let e = i32x4.add(
        i32x4.dot_i16x8_s(v128.and(l, m), v128.load(xc)),
        i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(l, 8), m), v128.load(xc, 16)),
      );
      let o = i32x4.add(
        i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(l, 4), m), v128.load(xc, 64)),
        i32x4.dot_i16x8_s(i16x8.shr_u(l, 12), v128.load(xc, 80)),
      );
      l = v128.load(q, 16);
      e = i32x4.add(e, i32x4.dot_i16x8_s(v128.and(l, m), v128.load(xc, 32)));
      e = i32x4.add(e, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(l, 8), m), v128.load(xc, 48)));
      o = i32x4.add(o, i32x4.dot_i16x8_s(v128.and(i16x8.shr_u(l, 4), m), v128.load(xc, 96)));
      o = i32x4.add(o, i32x4.dot_i16x8_s(i16x8.shr_u(l, 12), v128.load(xc, 112)));
      // sub-blocks 2c (low nibbles) and 2c + 1
      v128.store(PART + (c << 5), e);
      v128.store(PART + (c << 5), o, 16);
    }
    const sums = i32x4.add(
      i32x4.mul(
        isum4(v128.load(PART), v128.load(PART, 16), v128.load(PART, 32), v128.load(PART, 48)),
        i32x4.extend_low_i16x8_u(sc16),
      ),
      i32x4.mul(
        isum4(v128.load(PART, 64), v128.load(PART, 80), v128.load(PART, 96), v128.load(PART, 112)),
        i32x4.extend_high_i16x8_u(sc16),
      ),
    );
    const s = isum(sums);
    const bs = a + 260;
    const mins = isum(
      i32x4.add(
        i32x4.mul(i32x4.extadd_pairwise_i16x8_s(v128.load(bs)), i32x4.extend_low_i16x8_u(mn16)),
        i32x4.mul(
          i32x4.extadd_pairwise_i16x8_s(v128.load(bs, 16)),
          i32x4.extend_high_i16x8_u(mn16),
        ),
      ),
    );
    const dx = load<f32>(a);
    acc += h2f(load<u16>(w)) * dx * <f32>s;
    acc -= h2f(load<u16>(w, 2)) * dx * <f32>mins;
  }
  return acc;
}

/** i32x4 partial sums of 16 quants q (0..63 bytes) times the 16 widened activations at x. */
function dot16w(q: v128, x: usize): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(q), v128.load(x)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(q), v128.load(x, 16)),
  );
}

/**
 * Q6_K weights against the Q8_K activation row a, widened at x (natural order): the block sum
 * s = sum_g sc_g * sum (q - 32) * x formed as sum_g sc_g * sum q * x - 32 * sum_g sc_g * bsum_g
 * (the same integer) in four looped passes of 64 values, then acc = acc + (d_w * d_x) * f32(s).
 */
function dotQ6_Kw(w: usize, a: usize, x: usize, n: i32): f32 {
  let acc: f32 = 0;
  const nb = n >> 8;
  for (let b = 0; b < nb; b++, w += 210, a += 292, x += 512) {
    const sc = v128.load(w, 192);
    let total = i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(sc), v128.load(a, 260)),
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(sc), v128.load(a, 276)),
    );
    total = i32x4.sub(i32x4.splat(0), i32x4.shl(total, 5));
    for (let j: usize = 0; j < 4; j++) {
      // pass j: 16 bytes of ql at 64h + 16p (and 32 further), of qh at 128 + 32h + 16p; value
      // 32k + 16p + i of half h lies in sub-block 8h + 2k + p
      const h = j >> 1;
      const p = (j & 1) << 4;
      const ql = w + (h << 6) + p;
      const qh = w + (h << 5) + p;
      const xp = x + ((h << 7) + p) * 2;
      const m4 = v128.load(M + NIB8);
      const m30 = v128.load(M + HI2);
      const qa = v128.load(ql);
      const qb = v128.load(ql, 32);
      const hb = v128.load(qh, 128);
      const d0 = dot16w(v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30)), xp);
      const d1 = dot16w(v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30)), xp + 64);
      const d2 = dot16w(v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30)), xp + 128);
      const d3 = dot16w(
        v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30)),
        xp + 192,
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

/**
 * out[j] = dot(weight row j, activation row a) for j < d: `type` one of `hasMatvec`, w d rows of
 * `wr` bytes, the row widened into u (room for `widenedBytes(n)`).
 */
export function matvecQ(
  type: i32,
  out: usize,
  w: usize,
  wr: usize,
  a: usize,
  n: i32,
  d: i32,
  u: usize,
): void {
  widenRow(type, a, n, u);
  let j = 0;
  if (type === Q8_0 || type === Q4_0) {
    // rows j, j + q, j + 2q, j + 3q a call (wasm/quant-matvec-rows4.ts), the d % 4 last below
    const q = d >> 2;
    const rs = <usize>q * wr;
    const os = (<usize>q) << 2;
    for (; j < q; j++, w += wr, out += 4) dotQ8w4(type === Q4_0, w, rs, u, n, out, os);
    j = q << 2;
    w += 3 * rs;
    out += 3 * os;
  }
  for (; j < d; j++, w += wr, out += 4) {
    let v: f32;
    if (type === Q8_0) v = dotQ8w(false, w, u, n);
    else if (type === Q4_0) v = dotQ8w(true, w, u, n);
    else if (type === Q4_K) v = dotQ4_Kw(w, a, u, n);
    else v = dotQ6_Kw(w, a, u, n);
    store<f32>(out, v);
  }
}
