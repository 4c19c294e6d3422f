/**
 * Quantised matmul (AssemblyScript, SIMD): weights in their ggml block format, activations
 * quantised per block, integer dot products. Exported through wasm/kernels.ts as `matmulQ`.
 *
 * Mirrors shared/model/kernels-quant-js.ts bit for bit: the activation formats and the order of
 * every float operation are described there and in shared/model/quant.ts. Integer sums are exact,
 * so SIMD may add them in any order; every float operation after them is a scalar f32 operation
 * in the documented order. Type ids are ggml's: F16 1, Q4_0 2, Q8_0 8, Q4_K 12, Q6_K 14.
 */

const F16: i32 = 1;
const Q4_0: i32 = 2;
const Q8_0: i32 = 8;
const Q4_K: i32 = 12;
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

// ---------------------------------------------------------------------------------------------
// Activation rows

function actRowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 1;
  if (type === Q8_0 || type === Q4_0) return <usize>(n / 32) * 36;
  return <usize>(n / 256) * 292;
}

function rowBytes(type: i32, n: i32): usize {
  if (type === F16) return (<usize>n) << 1;
  if (type === Q8_0) return <usize>(n / 32) * 34;
  if (type === Q4_0) return <usize>(n / 32) * 18;
  if (type === Q4_K) return <usize>(n / 256) * 144;
  return <usize>(n / 256) * 210;
}

function quantizeRow(type: i32, x: usize, n: i32, a: usize): void {
  if (type === F16) {
    for (let i = 0; i < n; i++)
      store<u16>(a + ((<usize>i) << 1), <u16>f2h(load<f32>(x + ((<usize>i) << 2))));
  } else if (type === Q8_0 || type === Q4_0) {
    for (let b = 0; b < n / 32; b++) {
      const xb = x + <usize>b * 128;
      const p = a + <usize>b * 36;
      let amax: f32 = 0;
      for (let j = 0; j < 32; j++)
        amax = max<f32>(amax, abs<f32>(load<f32>(xb + ((<usize>j) << 2))));
      const d: f32 = amax / 127;
      const id: f32 = amax !== 0 ? <f32>127 / amax : 0;
      store<f32>(p, h2f(f2h(d)));
      for (let j = 0; j < 32; j++) {
        store<i8>(p + 4 + j, <i8>(<i32>nearest<f32>(load<f32>(xb + ((<usize>j) << 2)) * id)));
      }
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

/** Exact sum of the products of 16 signed bytes, as four i32 lanes. */
function dot16(a: v128, b: v128): v128 {
  return i32x4.add(
    i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_s(a), i16x8.extend_low_i8x16_s(b)),
    i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_s(a), i16x8.extend_high_i8x16_s(b)),
  );
}

function isum(v: v128): i32 {
  return (
    i32x4.extract_lane(v, 0) +
    i32x4.extract_lane(v, 1) +
    i32x4.extract_lane(v, 2) +
    i32x4.extract_lane(v, 3)
  );
}

function dotF16(w: usize, a: usize, n: i32): f32 {
  const n4 = n & ~3;
  let acc = f32x4.splat(0);
  for (let k = 0; k < n4; k += 4) {
    const off = (<usize>k) << 1;
    const wv = h2f4(i32x4.extend_low_i16x8_u(v128.load64_zero(w + off)));
    const av = h2f4(i32x4.extend_low_i16x8_u(v128.load64_zero(a + off)));
    acc = f32x4.add(acc, f32x4.mul(wv, av));
  }
  let s: f32 =
    f32x4.extract_lane(acc, 0) +
    f32x4.extract_lane(acc, 1) +
    (f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3));
  for (let k = n4; k < n; k++) {
    const off = (<usize>k) << 1;
    s += h2f(load<u16>(w + off)) * h2f(load<u16>(a + off));
  }
  return s;
}

function dotQ8_0(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  for (let b = 0; b < n / 32; b++, w += 34, a += 36) {
    const s = isum(
      i32x4.add(
        dot16(v128.load(w + 2), v128.load(a + 4)),
        dot16(v128.load(w + 18), v128.load(a + 20)),
      ),
    );
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(a));
  }
  return acc;
}

function dotQ4_0(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  const eight = i8x16.splat(8);
  for (let b = 0; b < n / 32; b++, w += 18, a += 36) {
    const q = v128.load(w + 2);
    const q0 = i8x16.sub(v128.and(q, lo), eight);
    const q1 = i8x16.sub(i8x16.shr_u(q, 4), eight);
    const s = isum(i32x4.add(dot16(q0, v128.load(a + 4)), dot16(q1, v128.load(a + 20))));
    acc += <f32>s * (h2f(load<u16>(w)) * load<f32>(a));
  }
  return acc;
}

/** Q4_K's 6-bit scale (j < 8) or min (j + 8) of sub-block j from the 12 scale bytes at `p`. */
function q4kScale(p: usize, j: i32): i32 {
  if (j < 4) return load<u8>(p + j) & 63;
  return (load<u8>(p + j + 4) & 0xf) | ((load<u8>(p + j - 4) >> 6) << 4);
}

function q4kMin(p: usize, j: i32): i32 {
  if (j < 4) return load<u8>(p + j + 4) & 63;
  return (load<u8>(p + j + 4) >> 4) | ((load<u8>(p + j) >> 6) << 4);
}

function dotQ4_K(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  for (let b = 0; b < n / 256; b++, w += 144, a += 292) {
    let s = 0;
    let m = 0;
    for (let c = 0; c < 4; c++) {
      const qp = w + 16 + c * 32;
      const ap = a + 4 + c * 64;
      const qa = v128.load(qp);
      const qb = v128.load(qp + 16);
      const t0 = isum(
        i32x4.add(
          dot16(v128.and(qa, lo), v128.load(ap)),
          dot16(v128.and(qb, lo), v128.load(ap + 16)),
        ),
      );
      const t1 = isum(
        i32x4.add(
          dot16(i8x16.shr_u(qa, 4), v128.load(ap + 32)),
          dot16(i8x16.shr_u(qb, 4), v128.load(ap + 48)),
        ),
      );
      const j = 2 * c;
      s += q4kScale(w + 4, j) * t0 + q4kScale(w + 4, j + 1) * t1;
      const bs = a + 260 + c * 8;
      m +=
        q4kMin(w + 4, j) * (<i32>load<i16>(bs) + <i32>load<i16>(bs + 2)) +
        q4kMin(w + 4, j + 1) * (<i32>load<i16>(bs + 4) + <i32>load<i16>(bs + 6));
    }
    const dx = load<f32>(a);
    acc += h2f(load<u16>(w)) * dx * <f32>s;
    acc -= h2f(load<u16>(w + 2)) * dx * <f32>m;
  }
  return acc;
}

function dotQ6_K(w: usize, a: usize, n: i32): f32 {
  let acc: f32 = 0;
  const lo = i8x16.splat(0x0f);
  const three = i8x16.splat(3);
  const off = i8x16.splat(32);
  for (let b = 0; b < n / 256; b++, w += 210, a += 292) {
    let s = 0;
    for (let h = 0; h < 2; h++) {
      const ql = w + h * 64;
      const qh = w + 128 + h * 32;
      const sc = w + 192 + h * 8;
      const ap = a + 4 + h * 128;
      for (let l = 0; l < 32; l += 16) {
        const qa = v128.load(ql + l);
        const qb = v128.load(ql + 32 + l);
        const hb = v128.load(qh + l);
        const q1 = v128.or(v128.and(qa, lo), i8x16.shl(v128.and(hb, three), 4));
        const q2 = v128.or(v128.and(qb, lo), i8x16.shl(v128.and(i8x16.shr_u(hb, 2), three), 4));
        const q3 = v128.or(i8x16.shr_u(qa, 4), i8x16.shl(v128.and(i8x16.shr_u(hb, 4), three), 4));
        const q4 = v128.or(i8x16.shr_u(qb, 4), i8x16.shl(i8x16.shr_u(hb, 6), 4));
        const is = l >> 4;
        s +=
          <i32>load<i8>(sc + is) * isum(dot16(i8x16.sub(q1, off), v128.load(ap + l))) +
          <i32>load<i8>(sc + is + 2) * isum(dot16(i8x16.sub(q2, off), v128.load(ap + 32 + l))) +
          <i32>load<i8>(sc + is + 4) * isum(dot16(i8x16.sub(q3, off), v128.load(ap + 64 + l))) +
          <i32>load<i8>(sc + is + 6) * isum(dot16(i8x16.sub(q4, off), v128.load(ap + 96 + l)));
      }
    }
    acc += h2f(load<u16>(w + 208)) * load<f32>(a) * <f32>s;
  }
  return acc;
}

function dotRow(type: i32, w: usize, a: usize, n: i32): f32 {
  if (type === F16) return dotF16(w, a, n);
  if (type === Q8_0) return dotQ8_0(w, a, n);
  if (type === Q4_0) return dotQ4_0(w, a, n);
  if (type === Q4_K) return dotQ4_K(w, a, n);
  if (type === Q6_K) return dotQ6_K(w, a, n);
  return NaN; // not reached: the adapter checks the type
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
  for (let j = 0; j < d; j++) {
    const wj = w + <usize>j * wr;
    const oj = out + ((<usize>j) << 2);
    for (let i = 0; i < m; i++)
      store<f32>(oj + <usize>i * ob, dotRow(type, wj, scratch + <usize>i * ar, n));
  }
}
