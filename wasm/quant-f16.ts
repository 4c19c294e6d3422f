/**
 * Halves in the quantised matmul (wasm/quant.ts): f16 <-> f32 conversions and the F16 weight dot
 * products, mirroring the F16 order of shared/model/kernels-quant-js.ts bit for bit.
 */

// ---------------------------------------------------------------------------------------------
// f16 <-> f32

/**
 * The constants of `h2f4`, four lanes each, in memory (V8 rebuilds a `v128.const` with several
 * instructions at every use; a load from a constant address is one): 0x7fff, 2^112 as f32,
 * 0x7c00, 0x7f800000, 0x8000.
 */
const H2F = memory.data<u32>([
  0x7fff, 0x7fff, 0x7fff, 0x7fff, 0x77800000, 0x77800000, 0x77800000, 0x77800000, 0x7c00, 0x7c00,
  0x7c00, 0x7c00, 0x7f800000, 0x7f800000, 0x7f800000, 0x7f800000, 0x8000, 0x8000, 0x8000, 0x8000,
]);

/** Half bits (low 16 of each lane) -> f32, exact (subnormals, infinities and NaNs included). */
export function h2f4(h: v128): v128 {
  const em = v128.and(h, v128.load(H2F));
  let f = f32x4.mul(i32x4.shl(em, 13), v128.load(H2F, 16)); // * 2^112
  f = v128.or(f, v128.and(i32x4.ge_u(em, v128.load(H2F, 32)), v128.load(H2F, 48)));
  return v128.or(f, i32x4.shl(v128.and(h, v128.load(H2F, 64)), 16));
}

export function h2f(h: u32): f32 {
  // h2f4's steps on one lane
  const em = h & 0x7fff;
  let f = reinterpret<u32>(reinterpret<f32>(em << 13) * reinterpret<f32>(0x77800000));
  if (em >= 0x7c00) f |= 0x7f800000;
  return reinterpret<f32>(f | ((h & 0x8000) << 16));
}

/** f32 -> half bits, round to nearest even (as gguf.ts f32ToF16). */
export function f2h(value: f32): u32 {
  const x = reinterpret<u32>(value);
  const sign = (x >>> 16) & 0x8000;
  const exp = <i32>((x >>> 23) & 0xff);
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = <u32>(14 - e);
    const half: u32 = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1) !== 0)) r++;
    return sign | r;
  }
  let r = ((<u32>e) << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1) !== 0)) r++;
  return sign | r;
}

/**
 * Each lane rounded to the nearest half (ties to even), as f32: the value h2f(f2h(x)). Below the
 * smallest normal half the grid is 2^-24 (x * 2^24 rounded, exact); in the normal range the f32
 * mantissa is rounded to 10 bits; from 65520 on, infinity; NaN stays NaN.
 */
export function roundToHalf4(x: v128): v128 {
  const ax = f32x4.abs(x);
  const sub = f32x4.mul(
    f32x4.nearest(f32x4.mul(x, f32x4.splat(16777216))),
    f32x4.splat(5.9604644775390625e-8),
  );
  const odd = v128.and(i32x4.shr_u(x, 13), i32x4.splat(1));
  const nrm = v128.and(i32x4.add(i32x4.add(x, i32x4.splat(0xfff)), odd), i32x4.splat(0xffffe000));
  let r = v128.bitselect(sub, nrm, f32x4.lt(ax, f32x4.splat(6.103515625e-5)));
  const inf = v128.or(v128.and(x, i32x4.splat(0x80000000)), i32x4.splat(0x7f800000));
  r = v128.bitselect(inf, r, f32x4.ge(ax, f32x4.splat(65520)));
  return v128.bitselect(x, r, f32x4.ne(x, x));
}

/**
 * Four halves (sign-extended i32 lanes) -> f32, exact for finite values: the sign moves to bit 31,
 * exponent and mantissa to bits 13..27, and a multiply by 2^112 rebias the exponent (subnormals
 * included). Not for infinities and NaNs (h2f4 handles those).
 */
function h2f4finite(hs: v128): v128 {
  return f32x4.mul(h2f4scaled(hs), f32x4.splat(TWO_112));
}

const TWO_112: f32 = 5.192296858534828e33;

/**
 * Four finite halves (sign-extended i32 lanes) -> their values times 2^-112, exact: the f32 with
 * the half's sign at bit 31 and its exponent and mantissa at bits 13..27 (a half subnormal becomes
 * an f32 subnormal). Multiplied by an activation scaled by 2^112 (exact for any half, |x| < 2^16),
 * the product is the same real number as w * x, so it rounds to the same f32.
 */
function h2f4scaled(hs: v128): v128 {
  return v128.and(i32x4.shl(hs, 13), i32x4.splat(0x8fffffff));
}

/**
 * True when some lane of the four rows of halves may be an infinity or NaN: the OR of the rows
 * has all five exponent bits set (a superset of the lanes where one row has them all).
 */
function maybeNonFinite(q0: v128, q1: v128, q2: v128, q3: v128): bool {
  const expMask = i16x8.splat(0x7c00);
  const e = v128.and(v128.or(v128.or(q0, q1), v128.or(q2, q3)), expMask);
  return v128.any_true(i16x8.eq(e, expMask));
}

export function dotF16(w: usize, a: usize, n: i32): f32 {
  const n8 = n & ~7;
  let lo = f32x4.splat(0);
  let hi = f32x4.splat(0);
  const expMask = i16x8.splat(0x7c00);
  const scale = f32x4.splat(TWO_112);
  for (let k = 0; k < n8; k += 8) {
    const h = v128.load(w + ((<usize>k) << 1));
    const ak = a + ((<usize>k) << 2);
    if (v128.any_true(i16x8.eq(v128.and(h, expMask), expMask))) {
      // an infinity or NaN among these eight
      lo = f32x4.add(lo, f32x4.mul(h2f4(i32x4.extend_low_i16x8_u(h)), v128.load(ak)));
      hi = f32x4.add(hi, f32x4.mul(h2f4(i32x4.extend_high_i16x8_u(h)), v128.load(ak + 16)));
    } else {
      const x0 = f32x4.mul(v128.load(ak), scale);
      const x1 = f32x4.mul(v128.load(ak + 16), scale);
      lo = f32x4.add(lo, f32x4.mul(h2f4scaled(i32x4.extend_low_i16x8_s(h)), x0));
      hi = f32x4.add(hi, f32x4.mul(h2f4scaled(i32x4.extend_high_i16x8_s(h)), x1));
    }
  }
  return f16Tail(w, a, n, n8, f32x4.add(lo, hi));
}

/**
 * dotF16 of four weight rows (w, w + wr, w + 2 wr, w + 3 wr) with one activation row, into
 * o, o + 4, o + 8, o + 12: the same lanes and order as four dotF16 calls. The weights are
 * converted scaled by 2^-112 and the activations scaled by 2^112 (h2f4scaled): the same products.
 */
export function dotF16x4(w: usize, wr: usize, a: usize, n: i32, o: usize): void {
  const n8 = n & ~7;
  let l0 = f32x4.splat(0);
  let h0 = f32x4.splat(0);
  let l1 = f32x4.splat(0);
  let h1 = f32x4.splat(0);
  let l2 = f32x4.splat(0);
  let h2 = f32x4.splat(0);
  let l3 = f32x4.splat(0);
  let h3 = f32x4.splat(0);
  const scale = f32x4.splat(TWO_112);
  for (let k = 0; k < n8; k += 8) {
    const wk = w + ((<usize>k) << 1);
    const ak = a + ((<usize>k) << 2);
    const q0 = v128.load(wk);
    const q1 = v128.load(wk + wr);
    const q2 = v128.load(wk + 2 * wr);
    const q3 = v128.load(wk + 3 * wr);
    if (maybeNonFinite(q0, q1, q2, q3)) {
      // perhaps an infinity or NaN among these weights: the exact conversion for every lane
      const x0 = v128.load(ak);
      const x1 = v128.load(ak + 16);
      l0 = f32x4.add(l0, f32x4.mul(h2f4(i32x4.extend_low_i16x8_u(q0)), x0));
      h0 = f32x4.add(h0, f32x4.mul(h2f4(i32x4.extend_high_i16x8_u(q0)), x1));
      l1 = f32x4.add(l1, f32x4.mul(h2f4(i32x4.extend_low_i16x8_u(q1)), x0));
      h1 = f32x4.add(h1, f32x4.mul(h2f4(i32x4.extend_high_i16x8_u(q1)), x1));
      l2 = f32x4.add(l2, f32x4.mul(h2f4(i32x4.extend_low_i16x8_u(q2)), x0));
      h2 = f32x4.add(h2, f32x4.mul(h2f4(i32x4.extend_high_i16x8_u(q2)), x1));
      l3 = f32x4.add(l3, f32x4.mul(h2f4(i32x4.extend_low_i16x8_u(q3)), x0));
      h3 = f32x4.add(h3, f32x4.mul(h2f4(i32x4.extend_high_i16x8_u(q3)), x1));
    } else {
      const x0 = f32x4.mul(v128.load(ak), scale);
      const x1 = f32x4.mul(v128.load(ak + 16), scale);
      l0 = f32x4.add(l0, f32x4.mul(h2f4scaled(i32x4.extend_low_i16x8_s(q0)), x0));
      h0 = f32x4.add(h0, f32x4.mul(h2f4scaled(i32x4.extend_high_i16x8_s(q0)), x1));
      l1 = f32x4.add(l1, f32x4.mul(h2f4scaled(i32x4.extend_low_i16x8_s(q1)), x0));
      h1 = f32x4.add(h1, f32x4.mul(h2f4scaled(i32x4.extend_high_i16x8_s(q1)), x1));
      l2 = f32x4.add(l2, f32x4.mul(h2f4scaled(i32x4.extend_low_i16x8_s(q2)), x0));
      h2 = f32x4.add(h2, f32x4.mul(h2f4scaled(i32x4.extend_high_i16x8_s(q2)), x1));
      l3 = f32x4.add(l3, f32x4.mul(h2f4scaled(i32x4.extend_low_i16x8_s(q3)), x0));
      h3 = f32x4.add(h3, f32x4.mul(h2f4scaled(i32x4.extend_high_i16x8_s(q3)), x1));
    }
  }
  store<f32>(o, f16Tail(w, a, n, n8, f32x4.add(l0, h0)));
  store<f32>(o + 4, f16Tail(w + wr, a, n, n8, f32x4.add(l1, h1)));
  store<f32>(o + 8, f16Tail(w + 2 * wr, a, n, n8, f32x4.add(l2, h2)));
  store<f32>(o + 12, f16Tail(w + 3 * wr, a, n, n8, f32x4.add(l3, h3)));
}

/** Rows w, w + wr, w + 2 wr, w + 3 wr (n halves each) -> f32 at u, u + 4n, ... (exact). */
export function unpackF16x4(w: usize, wr: usize, n: i32, u: usize): void {
  const n8 = n & ~7;
  const rb = (<usize>n) << 2;
  const expMask = i16x8.splat(0x7c00);
  for (let r: usize = 0; r < 4; r++) {
    const wk0 = w + r * wr;
    const uk0 = u + r * rb;
    for (let k = 0; k < n8; k += 8) {
      const h = v128.load(wk0 + ((<usize>k) << 1));
      const uk = uk0 + ((<usize>k) << 2);
      if (v128.any_true(i16x8.eq(v128.and(h, expMask), expMask))) {
        v128.store(uk, h2f4(i32x4.extend_low_i16x8_u(h)));
        v128.store(uk + 16, h2f4(i32x4.extend_high_i16x8_u(h)));
      } else {
        v128.store(uk, h2f4finite(i32x4.extend_low_i16x8_s(h)));
        v128.store(uk + 16, h2f4finite(i32x4.extend_high_i16x8_s(h)));
      }
    }
    for (let k = n8; k < n; k++) {
      store<f32>(uk0 + ((<usize>k) << 2), h2f(load<u16>(wk0 + ((<usize>k) << 1))));
    }
  }
}

/** dotF16x4 on rows unpacked by unpackF16x4 (row stride 4n bytes at u): the same sums. */
export function dotUnpackedF16x4(u: usize, a: usize, n: i32, o: usize): void {
  const n8 = n & ~7;
  const rb = (<usize>n) << 2;
  let l0 = f32x4.splat(0);
  let h0 = f32x4.splat(0);
  let l1 = f32x4.splat(0);
  let h1 = f32x4.splat(0);
  let l2 = f32x4.splat(0);
  let h2 = f32x4.splat(0);
  let l3 = f32x4.splat(0);
  let h3 = f32x4.splat(0);
  for (let k = 0; k < n8; k += 8) {
    const off = (<usize>k) << 2;
    const x0 = v128.load(a + off);
    const x1 = v128.load(a + off + 16);
    const u0 = u + off;
    l0 = f32x4.add(l0, f32x4.mul(v128.load(u0), x0));
    h0 = f32x4.add(h0, f32x4.mul(v128.load(u0 + 16), x1));
    l1 = f32x4.add(l1, f32x4.mul(v128.load(u0 + rb), x0));
    h1 = f32x4.add(h1, f32x4.mul(v128.load(u0 + rb + 16), x1));
    l2 = f32x4.add(l2, f32x4.mul(v128.load(u0 + 2 * rb), x0));
    h2 = f32x4.add(h2, f32x4.mul(v128.load(u0 + 2 * rb + 16), x1));
    l3 = f32x4.add(l3, f32x4.mul(v128.load(u0 + 3 * rb), x0));
    h3 = f32x4.add(h3, f32x4.mul(v128.load(u0 + 3 * rb + 16), x1));
  }
  store<f32>(o, f32Tail(u, a, n, n8, f32x4.add(l0, h0)));
  store<f32>(o + 4, f32Tail(u + rb, a, n, n8, f32x4.add(l1, h1)));
  store<f32>(o + 8, f32Tail(u + 2 * rb, a, n, n8, f32x4.add(l2, h2)));
  store<f32>(o + 12, f32Tail(u + 3 * rb, a, n, n8, f32x4.add(l3, h3)));
}

/** f16Tail with the weights already widened to f32. */
function f32Tail(u: usize, a: usize, n: i32, n8: i32, t: v128): f32 {
  let s: f32 =
    f32x4.extract_lane(t, 0) +
    f32x4.extract_lane(t, 1) +
    (f32x4.extract_lane(t, 2) + f32x4.extract_lane(t, 3));
  for (let k = n8; k < n; k++) {
    const off = (<usize>k) << 2;
    s += load<f32>(u + off) * load<f32>(a + off);
  }
  return s;
}

/** (t0 + t1) + (t2 + t3), then the tail k = n8 .. n - 1 in order. */
function f16Tail(w: usize, a: usize, n: i32, n8: i32, t: v128): f32 {
  let s: f32 =
    f32x4.extract_lane(t, 0) +
    f32x4.extract_lane(t, 1) +
    (f32x4.extract_lane(t, 2) + f32x4.extract_lane(t, 3));
  for (let k = n8; k < n; k++) {
    s += h2f(load<u16>(w + ((<usize>k) << 1))) * load<f32>(a + ((<usize>k) << 2));
  }
  return s;
}
