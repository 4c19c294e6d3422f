/**
 * Quantised matmul (AssemblyScript, SIMD): weights in their ggml block format, activations
 * quantised per block, integer dot products. Exported through wasm/kernels.ts as `matmulQ`.
 *
 * Mirrors shared/model/kernels-quant-js.ts bit for bit: the activation formats and the order of
 * every float operation are described there and in shared/model/quant.ts. Integer sums are exact,
 * so SIMD may add them in any order; every float operation after them is a scalar f32 operation
 * in the documented order. Type ids are ggml's: F16 1, Q4_0 2, Q4_1 3, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14.
 */

const F16: i32 = 1;
const Q4_0: i32 = 2;
const Q4_1: i32 = 3;
const Q8_0: i32 = 8;
const Q4_K: i32 = 12;
const Q5_K: i32 = 13;
const Q6_K: i32 = 14;

// ---------------------------------------------------------------------------------------------
// f16 <-> f32

/** Half bits (low 16 of each lane) -> f32, exact (subnormals, infinities and NaNs included). */
function h2f4(h: v128): v128 {
  const em = v128.and(h, i32x4.splat(0x7fff));
  let f = f32x4.mul(i32x4.shl(em, 13), f32x4.splat(5.192296858534828e33)); // * 2^112
  f = v128.or(f, v128.and(i32x4.ge_u(em, i32x4.splat(0x7c00)), i32x4.splat(0x7f800000)));
  return v128.or(f, i32x4.shl(v128.and(h, i32x4.splat(0x8000)), 16));
}

function h2f(h: u32): f32 {
  return f32x4.extract_lane(h2f4(i32x4.splat(h)), 0);
}

/** f32 -> half bits, round to nearest even (as gguf.ts f32ToF16). */
function f2h(value: f32): u32 {
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
function roundToHalf4(x: v128): v128 {
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

// ---------------------------------------------------------------------------------------------
// Activation rows

function actRowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 2;
  if (type === Q8_0 || type === Q4_0) return <usize>(n / 32) * 36;
  if (type === Q4_1) return <usize>(n / 32) * 40;
  return <usize>(n / 256) * 292;
}

function rowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 1;
  if (type === Q8_0) return <usize>(n / 32) * 34;
  if (type === Q4_0) return <usize>(n / 32) * 18;
  if (type === Q4_1) return <usize>(n / 32) * 20;
  if (type === Q4_K) return <usize>(n / 256) * 144;
  if (type === Q5_K) return <usize>(n / 256) * 176;
  return <usize>(n / 256) * 210;
}

function quantizeRow(type: i32, x: usize, n: i32, a: usize): void {
  if (type === F16) {
    const n4 = n & ~3;
    for (let i = 0; i < n4; i += 4) {
      const off = (<usize>i) << 2;
      v128.store(a + off, roundToHalf4(v128.load(x + off)));
    }
    for (let i = n4; i < n; i++) {
      const off = (<usize>i) << 2;
      store<f32>(a + off, h2f(f2h(load<f32>(x + off))));
    }
  } else if (type === Q8_0 || type === Q4_0 || type === Q4_1) {
    const q81 = type === Q4_1; // Q8_1: s after d, the q 4 bytes later
    const bb: usize = q81 ? 40 : 36;
    const qo: usize = q81 ? 8 : 4;
    for (let b = 0; b < n / 32; b++) {
      const xb = x + <usize>b * 128;
      const p = a + <usize>b * bb;
      let amax: f32 = 0;
      for (let j = 0; j < 32; j++)
        amax = max<f32>(amax, abs<f32>(load<f32>(xb + ((<usize>j) << 2))));
      const d: f32 = amax / 127;
      const id: f32 = amax !== 0 ? <f32>127 / amax : 0;
      store<f32>(p, h2f(f2h(d)));
      let sum = 0;
      for (let j = 0; j < 32; j++) {
        const q = <i32>nearest<f32>(load<f32>(xb + ((<usize>j) << 2)) * id);
        store<i8>(p + qo + j, <i8>q);
        sum += q;
      }
      if (q81) store<f32>(p + 4, h2f(f2h(d * <f32>sum)));
    }
  } else {
    for (let b = 0; b < n / 256; b++) {
      const xb = x + <usize>b * 1024;
      const p = a + <usize>b * 292;
      let amax: f32 = 0;
      let mx: f32 = 0;
      for (let j = 0; j < 256; j++) {
        const v = load<f32>(xb + ((<usize>j) << 2));
        if (abs<f32>(v) > amax) {
          amax = abs<f32>(v);
          mx = v;
        }
      }
      if (amax === 0) {
        memory.fill(p, 0, 292);
        continue;
      }
      const iscale: f32 = <f32>-127 / mx;
      for (let g = 0; g < 16; g++) {
        let sum = 0;
        for (let j = g * 16; j < g * 16 + 16; j++) {
          const q = min<i32>(127, <i32>nearest<f32>(iscale * load<f32>(xb + ((<usize>j) << 2))));
          store<i8>(p + 4 + j, <i8>q);
          sum += q;
        }
        store<i16>(p + 260 + 2 * g, <i16>sum);
      }
      store<f32>(p, <f32>1 / iscale);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dot products of one weight row and one activation row
//
// Integer sums: i16x8.extmul of signed bytes, added as i16 while they cannot overflow (|q_w| <= 128,
// |q_x| <= 127), widened with extadd_pairwise. Per-block sums of four blocks are reduced together
// (isum4) and their float products formed lane-wise, then added to the scalar accumulator in block
// order: the same rounded operations, in the same order, as the scalar reference.

/** i32x4 partial sums of the products of 32 signed bytes at w and a (exact). */
function dot32(w0: v128, w1: v128, a0: v128, a1: v128): v128 {
  const p0 = i16x8.add(i16x8.extmul_low_i8x16_s(w0, a0), i16x8.extmul_high_i8x16_s(w0, a0));
  const p1 = i16x8.add(i16x8.extmul_low_i8x16_s(w1, a1), i16x8.extmul_high_i8x16_s(w1, a1));
  return i32x4.add(i32x4.extadd_pairwise_i16x8_s(p0), i32x4.extadd_pairwise_i16x8_s(p1));
}

/** i32x4 partial sums of the products of 16 signed bytes (exact). */
function dot16(w: v128, a: v128): v128 {
  return i32x4.extadd_pairwise_i16x8_s(
    i16x8.add(i16x8.extmul_low_i8x16_s(w, a), i16x8.extmul_high_i8x16_s(w, a)),
  );
}

/** [sum a, sum b, sum c, sum d] (exact). */
function isum4(a: v128, b: v128, c: v128, d: v128): v128 {
  const ab = i32x4.add(v128.shuffle<i32>(a, b, 0, 2, 4, 6), v128.shuffle<i32>(a, b, 1, 3, 5, 7));
  const cd = i32x4.add(v128.shuffle<i32>(c, d, 0, 2, 4, 6), v128.shuffle<i32>(c, d, 1, 3, 5, 7));
  return i32x4.add(v128.shuffle<i32>(ab, cd, 0, 2, 4, 6), v128.shuffle<i32>(ab, cd, 1, 3, 5, 7));
}

function isum(v: v128): i32 {
  return (
    i32x4.extract_lane(v, 0) +
    i32x4.extract_lane(v, 1) +
    i32x4.extract_lane(v, 2) +
    i32x4.extract_lane(v, 3)
  );
}

/** acc + p0 + p1 + p2 + p3, in that order. */
function addLanes(acc: f32, p: v128): f32 {
  acc += f32x4.extract_lane(p, 0);
  acc += f32x4.extract_lane(p, 1);
  acc += f32x4.extract_lane(p, 2);
  return acc + f32x4.extract_lane(p, 3);
}

/** Four halves at p, p + stride, p + 2 stride, p + 3 stride, as f32x4. */
function h2f4at(p: usize, stride: usize): v128 {
  let v = i32x4.splat(load<u16>(p));
  v = i32x4.replace_lane(v, 1, load<u16>(p + stride));
  v = i32x4.replace_lane(v, 2, load<u16>(p + 2 * stride));
  return h2f4(i32x4.replace_lane(v, 3, load<u16>(p + 3 * stride)));
}

/** Four f32 at p, p + stride, p + 2 stride, p + 3 stride. */
function f4at(p: usize, stride: usize): v128 {
  let v = f32x4.splat(load<f32>(p));
  v = f32x4.replace_lane(v, 1, load<f32>(p + stride));
  v = f32x4.replace_lane(v, 2, load<f32>(p + 2 * stride));
  return f32x4.replace_lane(v, 3, load<f32>(p + 3 * stride));
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

function dotF16(w: usize, a: usize, n: i32): f32 {
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
function dotF16x4(w: usize, wr: usize, a: usize, n: i32, o: usize): void {
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
function unpackF16x4(w: usize, wr: usize, n: i32, u: usize): void {
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
function dotUnpackedF16x4(u: usize, a: usize, n: i32, o: usize): void {
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
function dotQ8(q4: bool, w: usize, a: usize, n: i32): f32 {
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
function dotQ8x4(q4: bool, w: usize, wr: usize, a: usize, n: i32, o: usize): void {
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
function q4kScaleBytes(p: usize): v128 {
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
function hiNibbles(q: v128): v128 {
  return v128.and(i16x8.shr_u(q, 4), i8x16.splat(0x0f));
}

/** Bits s..s+1 of each byte (s <= 6), as 0..3. */
function bits2(q: v128, s: i32): v128 {
  return v128.and(i16x8.shr_u(q, s), i8x16.splat(3));
}

/** i32x4 partial sums of 16 signed bytes q times the 16 int8 activations at x, widened to i16. */
function dot16x(q: v128, x: usize): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(q), v128.load8x8_s(x)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(q), v128.load8x8_s(x + 8)),
  );
}

function dotQ6_K(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  const three = i8x16.splat(3);
  const off = i8x16.splat(32);
  for (let b = 0; b < n / 256; b++, w += 210, a += 292) {
    let total = i32x4.splat(0);
    for (let h = 0; h < 2; h++) {
      const ql = w + h * 64;
      const qh = w + 128 + h * 32;
      const ap = a + 4 + h * 128;
      // sub-blocks of this half in scale order: 16 values each, scales sc[8h .. 8h + 8)
      let s0: v128 = i32x4.splat(0);
      let s1: v128 = i32x4.splat(0);
      let s2: v128 = i32x4.splat(0);
      let s3: v128 = i32x4.splat(0);
      let s4: v128 = i32x4.splat(0);
      let s5: v128 = i32x4.splat(0);
      let s6: v128 = i32x4.splat(0);
      let s7: v128 = i32x4.splat(0);
      for (let l = 0; l < 32; l += 16) {
        const qa = v128.load(ql + l);
        const qb = v128.load(ql + 32 + l);
        const hb = v128.load(qh + l);
        const q1 = v128.or(v128.and(qa, lo), i16x8.shl(v128.and(hb, three), 4));
        const q2 = v128.or(v128.and(qb, lo), i16x8.shl(bits2(hb, 2), 4));
        const q3 = v128.or(hiNibbles(qa), i16x8.shl(bits2(hb, 4), 4));
        const q4 = v128.or(hiNibbles(qb), i16x8.shl(bits2(hb, 6), 4));
        const d1 = dot16x(i8x16.sub(q1, off), ap + l);
        const d2 = dot16x(i8x16.sub(q2, off), ap + 32 + l);
        const d3 = dot16x(i8x16.sub(q3, off), ap + 64 + l);
        const d4 = dot16x(i8x16.sub(q4, off), ap + 96 + l);
        // value 32k + l lies in sub-block 2k + l / 16
        if (l === 0) {
          s0 = d1;
          s2 = d2;
          s4 = d3;
          s6 = d4;
        } else {
          s1 = d1;
          s3 = d2;
          s5 = d3;
          s7 = d4;
        }
      }
      const sc = v128.load64_zero(w + 192 + h * 8); // 8 int8 scales
      const sc16 = i16x8.extend_low_i8x16_s(sc);
      total = i32x4.add(
        total,
        i32x4.add(
          i32x4.mul(isum4(s0, s1, s2, s3), i32x4.extend_low_i16x8_s(sc16)),
          i32x4.mul(isum4(s4, s5, s6, s7), i32x4.extend_high_i16x8_s(sc16)),
        ),
      );
    }
    acc += h2f(load<u16>(w + 208)) * load<f32>(a) * <f32>isum(total);
  }
  return acc;
}

function dotRow(type: i32, w: usize, a: usize, n: i32): f32 {
  if (type === F16) return dotF16(w, a, n);
  if (type === Q8_0) return dotQ8(false, w, a, n);
  if (type === Q4_0) return dotQ8(true, w, a, n);
  if (type === Q4_1) return dotQ4_1(w, a, n);
  if (type === Q4_K) return dotQ4_K(false, w, a, n);
  if (type === Q5_K) return dotQ4_K(true, w, a, n);
  if (type === Q6_K) return dotQ6_K(w, a, n);
  return NaN; // not reached: the adapter checks the type
}

// ---------------------------------------------------------------------------------------------
// Unpacked weight rows (batches of two or more activation rows)
//
// With m >= 2 rows, a Q4_0, Q4_K, Q5_K or Q6_K weight row is unpacked once into plain int8 values (and
// its scales), or four F16 rows are widened to f32 (in matmulQ), and then dotted with every
// activation row. The integer sums are the same exact
// numbers and the float operations the same, so the result is bit-identical to the packed path.
// The unpacked row lives in the attention scratch of wasm/kernels.ts (the 128 KiB just above the
// static data): the two never run at once.

const UNPACK_BYTES: usize = 128 << 10;

function unpackBase(): usize {
  return (__heap_base + 15) & ~15;
}

/** Bytes of one unpacked row: Q4_0 as Q8_0 blocks (34 a block); K-quants 328 a block. */
function unpackedBytes(type: i32, n: i32): usize {
  return type === Q4_0 ? <usize>(n / 32) * 34 : <usize>(n / 256) * 328;
}

/** Q4_0 row -> Q8_0 blocks (f16 d, int8 q[32] = nibble - 8). */
function unpackQ4_0(w: usize, u: usize, n: i32): void {
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
function unpackK(type: i32, w: usize, u: usize, n: i32): void {
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
function dotUnpackedK(type: i32, u: usize, a: usize, n: i32): f32 {
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
function dotUnpackedKx4(type: i32, u: usize, ub: usize, a: usize, n: i32, o: usize): void {
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

/**
 * out[i * ldo + j] = dot(x row i, w row j) for i < m, j < d: x (m, n) f32, w d rows of `type`
 * blocks, `scratch` room for m activation rows. Byte offsets; shapes checked by the adapter.
 */
export function matmulQ(
  out: usize,
  ldo: i32,
  x: usize,
  w: usize,
  type: i32,
  m: i32,
  n: i32,
  d: i32,
  scratch: usize,
): void {
  const ar = actRowBytes(type, n);
  const wr = rowBytes(type, n);
  for (let i = 0; i < m; i++)
    quantizeRow(type, x + ((<usize>i * <usize>n) << 2), n, scratch + <usize>i * ar);
  const ob = (<usize>ldo) << 2;
  const ub = unpackedBytes(type, n);
  let j0 = 0;
  if (type === Q4_0 && m >= 2 && ub << 2 <= UNPACK_BYTES) {
    // four weight rows unpacked to Q8_0 blocks at once, then four rows per activation row
    const u = unpackBase();
    for (; j0 + 4 <= d; j0 += 4) {
      const wj = w + <usize>j0 * wr;
      const oj = out + ((<usize>j0) << 2);
      for (let r: usize = 0; r < 4; r++) unpackQ4_0(wj + r * wr, u + r * ub, n);
      for (let i = 0; i < m; i++)
        dotQ8x4(false, u, ub, scratch + <usize>i * ar, n, oj + <usize>i * ob);
    }
  }
  if (type !== Q4_0 && type !== F16 && type !== Q8_0 && type !== Q4_1 && m >= 2) {
    if (ub << 2 <= UNPACK_BYTES) {
      // K-quants: four weight rows unpacked at once, then four rows per activation row
      const u = unpackBase();
      for (; j0 + 4 <= d; j0 += 4) {
        const wj = w + <usize>j0 * wr;
        const oj = out + ((<usize>j0) << 2);
        for (let r: usize = 0; r < 4; r++) unpackK(type, wj + r * wr, u + r * ub, n);
        for (let i = 0; i < m; i++)
          dotUnpackedKx4(type, u, ub, scratch + <usize>i * ar, n, oj + <usize>i * ob);
      }
    }
  }
  const unpack = type === Q4_0 || type === Q4_K || type === Q5_K || type === Q6_K;
  if (m >= 2 && unpack && ub <= UNPACK_BYTES) {
    const u = unpackBase();
    for (let j = j0; j < d; j++) {
      const wj = w + <usize>j * wr;
      const oj = out + ((<usize>j) << 2);
      if (type === Q4_0) {
        unpackQ4_0(wj, u, n);
        for (let i = 0; i < m; i++)
          store<f32>(oj + <usize>i * ob, dotQ8(false, u, scratch + <usize>i * ar, n));
      } else {
        unpackK(type, wj, u, n);
        for (let i = 0; i < m; i++)
          store<f32>(oj + <usize>i * ob, dotUnpackedK(type, u, scratch + <usize>i * ar, n));
      }
    }
    return;
  }
  if (type === Q8_0 || type === Q4_0) {
    // four weight rows per pass over each activation row
    for (; j0 + 4 <= d; j0 += 4) {
      const wj = w + <usize>j0 * wr;
      const oj = out + ((<usize>j0) << 2);
      for (let i = 0; i < m; i++)
        dotQ8x4(type === Q4_0, wj, wr, scratch + <usize>i * ar, n, oj + <usize>i * ob);
    }
  }
  if (type === F16) {
    // with two or more rows, each group of four weight rows is widened to f32 once
    const widen = m >= 2 && (<usize>n) << 4 <= UNPACK_BYTES;
    const u = unpackBase();
    for (; j0 + 4 <= d; j0 += 4) {
      const wj = w + <usize>j0 * wr;
      const oj = out + ((<usize>j0) << 2);
      if (widen) {
        unpackF16x4(wj, wr, n, u);
        for (let i = 0; i < m; i++)
          dotUnpackedF16x4(u, scratch + <usize>i * ar, n, oj + <usize>i * ob);
      } else {
        for (let i = 0; i < m; i++)
          dotF16x4(wj, wr, scratch + <usize>i * ar, n, oj + <usize>i * ob);
      }
    }
  }
  for (let j = j0; j < d; j++) {
    const wj = w + <usize>j * wr;
    const oj = out + ((<usize>j) << 2);
    for (let i = 0; i < m; i++)
      store<f32>(oj + <usize>i * ob, dotRow(type, wj, scratch + <usize>i * ar, n));
  }
}
