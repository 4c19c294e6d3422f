/**
 * Relaxed-SIMD integer sums for the quantised matmul (wasm/quant.ts), compiled into
 * wasm/kernels-relaxed.wasm only: every caller tests ASC_FEATURE_RELAXED_SIMD, a compile-time
 * constant, so the plain build (wasm/kernels.wasm) contains none of this.
 *
 * The one relaxed operation is i16x8.relaxed_dot_i8x16_i7x16_s(a, b) (`dot2`): 16 signed bytes
 * of a times 16 bytes of b, adjacent products added into eight int16 lanes (x64: pmaddubsw). The
 * host may read b's bytes as signed or unsigned when their top bit is set, so every b here lies
 * in [0, 127]: 4-bit and 6-bit quants before their offset, or (Q8_0, whose weights take both
 * signs, as a) the activation's positive and negative parts max(q, 0) and max(-q, 0). Then a lane
 * is exactly a0 b0 + a1 b1, at most 2 * 128 * 127 < 2^15 in magnitude, on every host, and the
 * integer sums below are the exact numbers of wasm/quant-dot.ts: the float steps after them are
 * unchanged, so this build is bit for bit the JS reference (shared/model/kernels-quant-js.ts) too.
 *
 * Where two dot2 lanes are added in int16, the comment gives the bound that keeps the sum exact.
 * This file: one activation row (Q8_0, Q4_0, Q4_K, Q6_K; Q6_K_LANES in wasm/quant-lanes.ts).
 */

import { addLanes, h2f4at, isum, isum4, q4kScaleBytes } from "./quant-dot";
import { h2f } from "./quant-f16";
import { dotQ6_KLr, dotQ6_KLr4 } from "./quant-lanes";
import { HI2, M, NIB8, PART } from "./quant-matvec";
import { dotQ4_0r4, dotQ4_Kr4, dotQ6_Kr4, dotQ8_0r4 } from "./quant-relaxed-rows4";
import { Q4_0, Q4_K, Q6_K_LANES, Q8_0 } from "./quant-types";

/** 16 byte products a * b, adjacent pairs added in int16 (b in [0, 127]: exact). */
export function dot2(a: v128, b: v128): v128 {
  return i16x8.relaxed_dot_i8x16_i7x16_s(a, b);
}

/** The sum of the 32 int8 q of the Q8_0 activation block at `a` (36 bytes: f32 d_x, then q). */
export function q8BlockSum(a: usize): i32 {
  const s = i16x8.add(
    i16x8.extadd_pairwise_i8x16_s(v128.load(a, 4)),
    i16x8.extadd_pairwise_i8x16_s(v128.load(a, 20)),
  );
  return isum(i32x4.extadd_pairwise_i16x8_s(s));
}

/**
 * The n / 32 f32 d_x of the Q8_0 activation row at `a` (36-byte blocks) at u, then the n / 32
 * int32 block sums of its q, for `dotQ4r`.
 */
function blockSums(a: usize, n: i32, u: usize): void {
  const nb = <usize>n >> 5;
  for (let b: usize = 0; b < nb; b++) {
    store<f32>(u + (b << 2), load<f32>(a + b * 36));
    store<i32>(u + (nb << 2) + (b << 2), q8BlockSum(a + b * 36));
  }
}

/**
 * The Q8_0 activation row at `a` (36-byte blocks) split for block8r at u: per block its 32
 * max(q, 0) then its 32 max(-q, 0) (64 bytes), then after the n values' 2n bytes the n / 32 f32
 * d_x (where widenRow puts them).
 */
function splitQ8(a: usize, n: i32, u: usize): void {
  const nb = <usize>n >> 5;
  const z = i8x16.splat(0);
  for (let b: usize = 0; b < nb; b++) {
    const q = a + b * 36 + 4;
    const o = u + (b << 6);
    const q0 = v128.load(q);
    const q1 = v128.load(q, 16);
    v128.store(o, i8x16.max_s(q0, z));
    v128.store(o, i8x16.max_s(q1, z), 16);
    // q >= -127 (amax / 127 steps), so -q does not wrap
    v128.store(o, i8x16.max_s(i8x16.neg(q0), z), 32);
    v128.store(o, i8x16.max_s(i8x16.neg(q1), z), 48);
    store<f32>(u + ((<usize>n) << 1) + (b << 2), load<f32>(a + b * 36));
  }
}

/**
 * i32x4 partial sums of a Q8_0 block (weights at w) times its split activations at x (splitQ8):
 * per 16 weights dot2 with the positive parts less dot2 with the negative ones. The difference
 * of two lanes is w0 q0 + w1 q1 (one part of each q is 0), within 2 * 128 * 127 < 2^15 like
 * either dot2, so the int16 subtraction is exact.
 */
export function block8r(w: usize, x: usize): v128 {
  const wa = v128.load(w, 2);
  const wb = v128.load(w, 18);
  const ea = i16x8.sub(dot2(wa, v128.load(x)), dot2(wa, v128.load(x, 32)));
  const eb = i16x8.sub(dot2(wb, v128.load(x, 16)), dot2(wb, v128.load(x, 48)));
  return i32x4.add(i32x4.extadd_pairwise_i16x8_s(ea), i32x4.extadd_pairwise_i16x8_s(eb));
}

/** A Q8_0 row at w against the split activation row at u (splitQ8): dotQ8w's float steps. */
function dotQ8r(w: usize, u: usize, n: i32): f32 {
  const nb = n >> 5;
  const dxs = u + ((<usize>n) << 1);
  let acc: f32 = 0;
  for (let b = 0; b < nb; b++, w += 34, u += 64) {
    const s = isum(block8r(w, u));
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(dxs + ((<usize>b) << 2)));
  }
  return acc;
}

/**
 * i32x4 partial sums of a Q4_0 block's 32 nibbles (0..15: byte j holds value j low, j + 16 high)
 * times its activations at x (int8, natural order): two dot2 lanes added, within 4 * 15 * 128.
 */
function block4r(w: usize, x: usize): v128 {
  const q = v128.load(w, 2);
  const m = v128.load(M + NIB8);
  const lo = dot2(v128.load(x), v128.and(q, m));
  const hi = dot2(v128.load(x, 16), v128.and(i16x8.shr_u(q, 4), m));
  return i32x4.extadd_pairwise_i16x8_s(i16x8.add(lo, hi));
}

/**
 * Q4_0 weights at w against the Q8_0 activation row a, its d_x and block sums at u (blockSums):
 * the float steps of dotQ8w (wasm/quant-matvec.ts), four blocks at a time, s = sum(nibble * q) -
 * 8 * sum(q).
 */
function dotQ4r(w: usize, a: usize, u: usize, n: i32): f32 {
  const nb = n >> 5;
  const sums = u + ((<usize>nb) << 2);
  let x = a + 4;
  let acc: f32 = 0;
  let b = 0;
  for (; b + 4 <= nb; b += 4) {
    for (let r: usize = 0; r < 64; r += 16, w += 18, x += 36) v128.store(PART + r, block4r(w, x));
    let s = isum4(v128.load(PART), v128.load(PART, 16), v128.load(PART, 32), v128.load(PART, 48));
    s = i32x4.sub(s, i32x4.shl(v128.load(sums + ((<usize>b) << 2)), 3));
    const dd = f32x4.mul(h2f4at(w - 72, 18), v128.load(u + ((<usize>b) << 2)));
    acc = addLanes(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  for (; b < nb; b++, w += 18, x += 36) {
    const s = isum(block4r(w, x)) - (load<i32>(sums + ((<usize>b) << 2)) << 3);
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(u + ((<usize>b) << 2)));
  }
  return acc;
}

/**
 * Q4_K weights against the Q8_K activation row a: per 64-value chunk c, sub-block 2c (low
 * nibbles) and 2c + 1 (high) as two dot2 lanes added (within 4 * 15 * 128), times the sub-block's
 * scale by i32x4.dot_i16x8_s; then the float steps of dotQ4_K (wasm/quant-dot.ts).
 */
function dotQ4_Kr(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const nb = n >> 8;
  for (let b = 0; b < nb; b++, w += 144, a += 292) {
    const scb = q4kScaleBytes(w + 4);
    v128.store(PART, i16x8.extend_low_i8x16_u(scb));
    let t = i32x4.splat(0);
    for (let c: usize = 0; c < 4; c++) {
      const m = v128.load(M + NIB8);
      const q = w + 16 + (c << 5);
      const x = a + 4 + (c << 6);
      const q0 = v128.load(q);
      const q1 = v128.load(q, 16);
      const e = i16x8.add(
        dot2(v128.load(x), v128.and(q0, m)),
        dot2(v128.load(x, 16), v128.and(q1, m)),
      );
      const o = i16x8.add(
        dot2(v128.load(x, 32), v128.and(i16x8.shr_u(q0, 4), m)),
        dot2(v128.load(x, 48), v128.and(i16x8.shr_u(q1, 4), m)),
      );
      t = i32x4.add(t, i32x4.dot_i16x8_s(e, v128.load16_splat(PART + (c << 2))));
      t = i32x4.add(t, i32x4.dot_i16x8_s(o, v128.load16_splat(PART + (c << 2) + 2)));
    }
    const s = isum(t);
    const mn16 = i16x8.extend_high_i8x16_u(scb);
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

/**
 * A Q6_K block's 16 sub-block scales widened to int16 at dst (32 bytes), and its offset term
 * -32 * sum_g sc_g * bsum_g as i32x4 partial sums (a: the Q8_K activation block, bsums at 260).
 */
export function q6Scales(w: usize, a: usize, dst: usize): v128 {
  const sc = v128.load(w, 192);
  const sl = i16x8.extend_low_i8x16_s(sc);
  const sh = i16x8.extend_high_i8x16_s(sc);
  v128.store(dst, sl);
  v128.store(dst, sh, 16);
  const t = i32x4.add(
    i32x4.dot_i16x8_s(sl, v128.load(a, 260)),
    i32x4.dot_i16x8_s(sh, v128.load(a, 276)),
  );
  return i32x4.sub(i32x4.splat(0), i32x4.shl(t, 5));
}

/**
 * Q6_K weights against the Q8_K activation row a: s = sum_g sc_g * sum q * x - 32 * sum_g sc_g *
 * bsum_g (the integer of dotQ6_K), each 16-value sub-block one dot2 (within 2 * 63 * 128) times
 * its scale by i32x4.dot_i16x8_s, in four passes of 64 values; then acc + (d_w * d_x) * f32(s).
 */
function dotQ6_Kr(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const nb = n >> 8;
  for (let b = 0; b < nb; b++, w += 210, a += 292) {
    let total = q6Scales(w, a, PART);
    for (let j: usize = 0; j < 4; j++) {
      // pass j: 16 bytes of ql at 64h + 16p (and 32 further), of qh at 128 + 32h + 16p; value
      // 32k + 16p + i of half h lies in sub-block 8h + 2k + p
      const h = j >> 1;
      const p = (j & 1) << 4;
      const ql = w + (h << 6) + p;
      const qh = w + (h << 5) + p;
      const x = a + 4 + (h << 7) + p;
      const s = PART + (((h << 3) + (j & 1)) << 1);
      const m4 = v128.load(M + NIB8);
      const m30 = v128.load(M + HI2);
      const qa = v128.load(ql);
      const qb = v128.load(ql, 32);
      const hb = v128.load(qh, 128);
      const q0 = v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30));
      const q1 = v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30));
      const q2 = v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30));
      const q3 = v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30));
      total = i32x4.add(total, i32x4.dot_i16x8_s(dot2(v128.load(x), q0), v128.load16_splat(s)));
      total = i32x4.add(
        total,
        i32x4.dot_i16x8_s(dot2(v128.load(x, 32), q1), v128.load16_splat(s, 4)),
      );
      total = i32x4.add(
        total,
        i32x4.dot_i16x8_s(dot2(v128.load(x, 64), q2), v128.load16_splat(s, 8)),
      );
      total = i32x4.add(
        total,
        i32x4.dot_i16x8_s(dot2(v128.load(x, 96), q3), v128.load16_splat(s, 12)),
      );
    }
    acc += h2f(load<u16>(w, 208)) * load<f32>(a) * <f32>isum(total);
  }
  return acc;
}

/**
 * out[j] = dot(weight row j, activation row a) for j < d (Q8_0, Q4_0, Q4_K, Q6_K, Q6_K_LANES),
 * as matvecQ (wasm/quant-matvec.ts); u has room for widenedBytes(n).
 */
export function matvecQr(
  type: i32,
  out: usize,
  w: usize,
  wr: usize,
  a: usize,
  n: i32,
  d: i32,
  u: usize,
): void {
  if (type === Q4_0) blockSums(a, n, u);
  if (type === Q8_0) splitQ8(a, n, u);
  // four rows a call (wasm/quant-relaxed-rows4.ts: Q8_0 and Q4_0 rows j, j + q, j + 2q, j + 3q,
  // the K-quants four adjacent rows), then the d % 4 last rows one at a time
  let j = 0;
  if (type === Q4_0 || type === Q8_0) {
    const q = d >> 2;
    const rs = <usize>q * wr;
    const os = (<usize>q) << 2;
    for (; j < q; j++, w += wr, out += 4) {
      if (type === Q8_0) dotQ8_0r4(w, rs, u, n, out, os);
      else dotQ4_0r4(w, rs, a, u, n, out, os);
    }
    j = q << 2;
    w += 3 * rs;
    out += 3 * os;
  }
  for (; j + 4 <= d; j += 4, w += wr << 2, out += 16) {
    if (type === Q4_K) dotQ4_Kr4(w, wr, a, n, out, u);
    else if (type === Q6_K_LANES) dotQ6_KLr4(w, wr, a, n, out, u);
    else dotQ6_Kr4(w, wr, a, n, out, u);
  }
  for (; j < d; j++, w += wr, out += 4) {
    let v: f32;
    if (type === Q8_0) v = dotQ8r(w, u, n);
    else if (type === Q4_0) v = dotQ4r(w, a, u, n);
    else if (type === Q4_K) v = dotQ4_Kr(w, a, n);
    else if (type === Q6_K_LANES) v = dotQ6_KLr(w, a, n, u);
    else v = dotQ6_Kr(w, a, n);
    store<f32>(out, v);
  }
}
