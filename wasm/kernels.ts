/**
 * WebAssembly SIMD kernels (AssemblyScript source of wasm/kernels.wasm; build: `npm run build:wasm`).
 *
 * Owns the hot loops behind `createWasmKernels` (shared/model/kernels-wasm.ts): matmul and paged
 * attention over byte offsets into this module's own linear memory. The module allocates nothing;
 * the adapter bump-allocates buffers above `heapBase()`.
 *
 * Bit-exactness contract (mirrored op for op by shared/model/kernels-js.ts, so that the JS and
 * wasm kernels give bit-identical results):
 * - every operation is a separately rounded f32 operation (wasm never fuses a mul and an add);
 * - a dot product over k = 0..n-1 keeps four lane sums, lane l holding k = l, l+4, l+8, ... for
 *   k < n & ~3, reduced as (l0 + l1) + (l2 + l3), then adds the tail k = n & ~3 .. n-1 in order;
 * - exp is `expf` below (Cephes-style polynomial), not Mathf.exp.
 * The order depends only on n, never on m, on the other rows, on blocking or on alignment.
 */

// ---------------------------------------------------------------------------------------------
// Dot-product building blocks

/** (l0 + l1) + (l2 + l3) of one accumulator. */
function hsum(a: v128): f32 {
  return (
    f32x4.extract_lane(a, 0) +
    f32x4.extract_lane(a, 1) +
    (f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3))
  );
}

/** [hsum(a), hsum(b), hsum(c), hsum(d)] with the same rounding as four `hsum` calls. */
function hsum4(a: v128, b: v128, c: v128, d: v128): v128 {
  // ab = [a0 + a1, a2 + a3, b0 + b1, b2 + b3], likewise cd.
  const ab = f32x4.add(v128.shuffle<f32>(a, b, 0, 2, 4, 6), v128.shuffle<f32>(a, b, 1, 3, 5, 7));
  const cd = f32x4.add(v128.shuffle<f32>(c, d, 0, 2, 4, 6), v128.shuffle<f32>(c, d, 1, 3, 5, 7));
  return f32x4.add(v128.shuffle<f32>(ab, cd, 0, 2, 4, 6), v128.shuffle<f32>(ab, cd, 1, 3, 5, 7));
}

/** Four floats w0[k], w1[k], w2[k], w3[k] (byte offsets already include k). */
function gather4(w0: usize, w1: usize, w2: usize, w3: usize): v128 {
  let v = f32x4.splat(load<f32>(w0));
  v = f32x4.replace_lane(v, 1, load<f32>(w1));
  v = f32x4.replace_lane(v, 2, load<f32>(w2));
  return f32x4.replace_lane(v, 3, load<f32>(w3));
}

/** dot(a[0..n), b[0..n)) in the canonical order; `n4b` = (n & ~3) * 4, `nb` = n * 4. */
function dot(a: usize, b: usize, n4b: usize, nb: usize): f32 {
  let acc = f32x4.splat(0);
  for (let k: usize = 0; k < n4b; k += 16) {
    acc = f32x4.add(acc, f32x4.mul(v128.load(a + k), v128.load(b + k)));
  }
  let s = hsum(acc);
  for (let k = n4b; k < nb; k += 4) s += load<f32>(a + k) * load<f32>(b + k);
  return s;
}

// ---------------------------------------------------------------------------------------------
// matmul

/**
 * One row of X against four rows of W: out[0..4) = x . w0, x . w1, x . w2, x . w3.
 * `ws` is the byte stride between W rows.
 */
function tile1x4(o: usize, x: usize, w0: usize, ws: usize, n4b: usize, nb: usize): void {
  const w1 = w0 + ws;
  const w2 = w1 + ws;
  const w3 = w2 + ws;
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  for (let k: usize = 0; k < n4b; k += 16) {
    const xv = v128.load(x + k);
    a0 = f32x4.add(a0, f32x4.mul(xv, v128.load(w0 + k)));
    a1 = f32x4.add(a1, f32x4.mul(xv, v128.load(w1 + k)));
    a2 = f32x4.add(a2, f32x4.mul(xv, v128.load(w2 + k)));
    a3 = f32x4.add(a3, f32x4.mul(xv, v128.load(w3 + k)));
  }
  let s = hsum4(a0, a1, a2, a3);
  for (let k = n4b; k < nb; k += 4) {
    s = f32x4.add(
      s,
      f32x4.mul(v128.load_splat<f32>(x + k), gather4(w0 + k, w1 + k, w2 + k, w3 + k)),
    );
  }
  v128.store(o, s);
}

/** One row of X against eight rows of W (the m = 1 matvec: eight independent chains). */
function tile1x8(o: usize, x: usize, w0: usize, ws: usize, n4b: usize, nb: usize): void {
  const w1 = w0 + ws;
  const w2 = w1 + ws;
  const w3 = w2 + ws;
  const w4 = w3 + ws;
  const w5 = w4 + ws;
  const w6 = w5 + ws;
  const w7 = w6 + ws;
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let a4 = f32x4.splat(0);
  let a5 = f32x4.splat(0);
  let a6 = f32x4.splat(0);
  let a7 = f32x4.splat(0);
  for (let k: usize = 0; k < n4b; k += 16) {
    const xv = v128.load(x + k);
    a0 = f32x4.add(a0, f32x4.mul(xv, v128.load(w0 + k)));
    a1 = f32x4.add(a1, f32x4.mul(xv, v128.load(w1 + k)));
    a2 = f32x4.add(a2, f32x4.mul(xv, v128.load(w2 + k)));
    a3 = f32x4.add(a3, f32x4.mul(xv, v128.load(w3 + k)));
    a4 = f32x4.add(a4, f32x4.mul(xv, v128.load(w4 + k)));
    a5 = f32x4.add(a5, f32x4.mul(xv, v128.load(w5 + k)));
    a6 = f32x4.add(a6, f32x4.mul(xv, v128.load(w6 + k)));
    a7 = f32x4.add(a7, f32x4.mul(xv, v128.load(w7 + k)));
  }
  let s = hsum4(a0, a1, a2, a3);
  let t = hsum4(a4, a5, a6, a7);
  for (let k = n4b; k < nb; k += 4) {
    const xs = v128.load_splat<f32>(x + k);
    s = f32x4.add(s, f32x4.mul(xs, gather4(w0 + k, w1 + k, w2 + k, w3 + k)));
    t = f32x4.add(t, f32x4.mul(xs, gather4(w4 + k, w5 + k, w6 + k, w7 + k)));
  }
  v128.store(o, s);
  v128.store(o, t, 16);
}

/** Two rows of X (byte stride `xs`) against four rows of W; outputs at o and o + os. */
function tile2x4(
  o: usize,
  os: usize,
  x: usize,
  xs: usize,
  w0: usize,
  ws: usize,
  n4b: usize,
  nb: usize,
): void {
  const x1 = x + xs;
  const w1 = w0 + ws;
  const w2 = w1 + ws;
  const w3 = w2 + ws;
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  for (let k: usize = 0; k < n4b; k += 16) {
    const xa = v128.load(x + k);
    const xb = v128.load(x1 + k);
    let wv = v128.load(w0 + k);
    a0 = f32x4.add(a0, f32x4.mul(xa, wv));
    b0 = f32x4.add(b0, f32x4.mul(xb, wv));
    wv = v128.load(w1 + k);
    a1 = f32x4.add(a1, f32x4.mul(xa, wv));
    b1 = f32x4.add(b1, f32x4.mul(xb, wv));
    wv = v128.load(w2 + k);
    a2 = f32x4.add(a2, f32x4.mul(xa, wv));
    b2 = f32x4.add(b2, f32x4.mul(xb, wv));
    wv = v128.load(w3 + k);
    a3 = f32x4.add(a3, f32x4.mul(xa, wv));
    b3 = f32x4.add(b3, f32x4.mul(xb, wv));
  }
  let s = hsum4(a0, a1, a2, a3);
  let t = hsum4(b0, b1, b2, b3);
  for (let k = n4b; k < nb; k += 4) {
    const wv = gather4(w0 + k, w1 + k, w2 + k, w3 + k);
    s = f32x4.add(s, f32x4.mul(v128.load_splat<f32>(x + k), wv));
    t = f32x4.add(t, f32x4.mul(v128.load_splat<f32>(x1 + k), wv));
  }
  v128.store(o, s);
  v128.store(o + os, t);
}

/**
 * X (m, n) @ W^T (d, n) -> out (m, d), all row-major f32 at byte offsets `out`, `x`, `w`.
 * out[i, j] = dot(x[i, :], w[j, :]) in the canonical order (see the file header). Offsets need
 * only 4-byte alignment. `out` must not overlap `x` or `w`.
 */
export function matmul(out: usize, x: usize, w: usize, m: i32, n: i32, d: i32): void {
  const nb = (<usize>n) << 2;
  const n4b = (<usize>(n & ~3)) << 2;
  const db = (<usize>d) << 2;
  const d4 = d & ~3;
  let j0 = 0;
  if (m === 1) {
    // Matvec (single-stream decode): eight columns at a time for more independent add chains.
    const d8 = d & ~7;
    for (; j0 < d8; j0 += 8) tile1x8(out + ((<usize>j0) << 2), x, w + <usize>j0 * nb, nb, n4b, nb);
  }
  // Columns in blocks of four (W rows stay in L1 while the X rows stream past), rows in pairs.
  for (let j = j0; j < d4; j += 4) {
    const wj = w + <usize>j * nb;
    const oj = out + ((<usize>j) << 2);
    let i = 0;
    for (; i + 2 <= m; i += 2) {
      tile2x4(oj + <usize>i * db, db, x + <usize>i * nb, nb, wj, nb, n4b, nb);
    }
    if (i < m) tile1x4(oj + <usize>i * db, x + <usize>i * nb, wj, nb, n4b, nb);
  }
  for (let j = d4; j < d; j++) {
    const wj = w + <usize>j * nb;
    for (let i = 0; i < m; i++) {
      store<f32>(out + <usize>i * db + ((<usize>j) << 2), dot(x + <usize>i * nb, wj, n4b, nb));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// exp

const LOG2E: f32 = <f32>Math.LOG2E;
const LN2_HI: f32 = 0.693359375;
const LN2_LO: f32 = -2.1219444e-4;
const P0: f32 = 1.98756915e-4;
const P1: f32 = 1.3981999507e-3;
const P2: f32 = 8.3334519073e-3;
const P3: f32 = 4.1665795894e-2;
const P4: f32 = 1.6666665459e-1;
const P5: f32 = 5.0000001201e-1;

/**
 * exp(x) in f32 (Cephes expf: Cody-Waite reduction by ln 2, degree-7 polynomial; about 1 ulp).
 * Returns 0 below -87 (and for -Infinity), +Infinity above 88, NaN for NaN. Every step is one
 * rounded f32 operation so the JS mirror (`expf` in kernels-js.ts) reproduces it bit for bit.
 */
export function expf(x: f32): f32 {
  if (!(x >= -87.0)) return x < -87.0 ? 0 : x; // below range: 0; NaN: NaN
  if (x > 88.0) return <f32>Infinity;
  const n = Mathf.floor(x * LOG2E + <f32>0.5);
  let r = x - n * LN2_HI;
  r = r - n * LN2_LO;
  const z = r * r;
  let p = P0 * r + P1;
  p = p * r + P2;
  p = p * r + P3;
  p = p * r + P4;
  p = p * r + P5;
  p = p * z + r + <f32>1.0;
  // n is in [-126, 127]: 2^n is a normal f32.
  return p * reinterpret<f32>((<i32>n + 127) << 23);
}

/** `expf` on four lanes, lane for lane the same bits (out-of-range lanes are selected over). */
function expf4(x: v128): v128 {
  const n = f32x4.floor(f32x4.add(f32x4.mul(x, f32x4.splat(LOG2E)), f32x4.splat(0.5)));
  let r = f32x4.sub(x, f32x4.mul(n, f32x4.splat(LN2_HI)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(LN2_LO)));
  const z = f32x4.mul(r, r);
  let p = f32x4.add(f32x4.mul(f32x4.splat(P0), r), f32x4.splat(P1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P4));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(P5));
  p = f32x4.add(f32x4.add(f32x4.mul(p, z), r), f32x4.splat(1.0));
  const pow2 = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  let y = f32x4.mul(p, pow2);
  y = v128.and(y, f32x4.ge(x, f32x4.splat(-87.0))); // 0 below -87 and for NaN
  y = v128.bitselect(f32x4.splat(<f32>Infinity), y, f32x4.gt(x, f32x4.splat(88.0)));
  return v128.bitselect(x, y, f32x4.ne(x, x)); // NaN stays NaN
}

// ---------------------------------------------------------------------------------------------
// attention

/**
 * Causal attention of one query token over `numKeys` positions of a paged KV cache.
 *   q, out: (numHeads * headDim) f32; kCache, vCache: (rows, numKvHeads * headDim) f32;
 *   blockTable: i32 block ids, position t at row blockTable[t / blockSize] * blockSize + t % blockSize;
 *   scores: numKeys f32 of scratch.
 * Per head h (KV head h / (numHeads / numKvHeads)), bit for bit as kernels-js.ts computes it:
 *   s_t = dot(q_h, k_t) * scale, scale = 1 / sqrt(headDim) (canonical dot order, f32);
 *   e_t = expf(s_t - max_t s_t); sum = ((e_0 + e_1) + e_2) + ... in position order;
 *   out_h[c] = (((e_0 v_0[c]) + e_1 v_1[c]) + ...) / sum, in position order.
 * numKeys >= 1 and numHeads % numKvHeads == 0 (the adapter checks). `out` may equal `q`: head h's
 * output is written only after its scores are done.
 */
export function attention(
  out: usize,
  q: usize,
  kCache: usize,
  vCache: usize,
  blockTable: usize,
  numKeys: i32,
  numHeads: i32,
  numKvHeads: i32,
  headDim: i32,
  blockSize: i32,
  scores: usize,
): void {
  const group = numHeads / numKvHeads;
  const hb = (<usize>headDim) << 2;
  const h4b = (<usize>(headDim & ~3)) << 2;
  const h16b = (<usize>(headDim & ~15)) << 2;
  const rowb = <usize>numKvHeads * hb;
  const blockb = <usize>blockSize * rowb;
  const keys4 = numKeys & ~3;
  const scale: f32 = <f32>1.0 / Mathf.sqrt(<f32>headDim);
  const scale4 = f32x4.splat(scale);
  for (let h = 0; h < numHeads; h++) {
    const qh = q + <usize>h * hb;
    const oh = out + <usize>h * hb;
    const kvOff = <usize>(h / group) * hb;

    // q_h . k_t * scale -> scores[t], four positions of a block at a time; and their max.
    let mx4 = f32x4.splat(-Infinity);
    let mx: f32 = -Infinity;
    let t = 0;
    for (let b = 0; t < numKeys; b++) {
      let kp = kCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb + kvOff;
      const end = min(t + blockSize, numKeys);
      for (; t + 4 <= end; t += 4) {
        const k1 = kp + rowb;
        const k2 = k1 + rowb;
        const k3 = k2 + rowb;
        let a0 = f32x4.splat(0);
        let a1 = f32x4.splat(0);
        let a2 = f32x4.splat(0);
        let a3 = f32x4.splat(0);
        for (let c: usize = 0; c < h4b; c += 16) {
          const qv = v128.load(qh + c);
          a0 = f32x4.add(a0, f32x4.mul(qv, v128.load(kp + c)));
          a1 = f32x4.add(a1, f32x4.mul(qv, v128.load(k1 + c)));
          a2 = f32x4.add(a2, f32x4.mul(qv, v128.load(k2 + c)));
          a3 = f32x4.add(a3, f32x4.mul(qv, v128.load(k3 + c)));
        }
        let sv = hsum4(a0, a1, a2, a3);
        for (let c = h4b; c < hb; c += 4) {
          sv = f32x4.add(
            sv,
            f32x4.mul(v128.load_splat<f32>(qh + c), gather4(kp + c, k1 + c, k2 + c, k3 + c)),
          );
        }
        sv = f32x4.mul(sv, scale4);
        v128.store(scores + ((<usize>t) << 2), sv);
        mx4 = f32x4.pmax(mx4, sv);
        kp = k3 + rowb;
      }
      for (; t < end; t++) {
        const s = dot(qh, kp, h4b, hb) * scale;
        store<f32>(scores + ((<usize>t) << 2), s);
        if (s > mx) mx = s;
        kp += rowb;
      }
    }
    // max is exact whatever the order; a -0 vs +0 max gives the same s - max below.
    mx = max(
      mx,
      max(
        max(f32x4.extract_lane(mx4, 0), f32x4.extract_lane(mx4, 1)),
        max(f32x4.extract_lane(mx4, 2), f32x4.extract_lane(mx4, 3)),
      ),
    );

    // e_t = expf(s_t - max) -> scores[t]; sum in position order.
    const mxv = f32x4.splat(mx);
    let sum: f32 = 0;
    let u = 0;
    for (; u < keys4; u += 4) {
      const sp = scores + ((<usize>u) << 2);
      const e = expf4(f32x4.sub(v128.load(sp), mxv));
      v128.store(sp, e);
      sum = sum + f32x4.extract_lane(e, 0) + f32x4.extract_lane(e, 1);
      sum = sum + f32x4.extract_lane(e, 2) + f32x4.extract_lane(e, 3);
    }
    for (; u < numKeys; u++) {
      const sp = scores + ((<usize>u) << 2);
      const e = expf(load<f32>(sp) - mx);
      store<f32>(sp, e);
      sum += e;
    }

    // sum_t e_t v_t / sum -> out_h, 16 columns at a time held in registers over all positions.
    const vh = vCache + kvOff;
    const sumv = f32x4.splat(sum);
    let c: usize = 0;
    for (; c < h16b; c += 64) {
      let a0 = f32x4.splat(0);
      let a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0);
      let a3 = f32x4.splat(0);
      t = 0;
      for (let b = 0; t < numKeys; b++) {
        let vp = vh + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb + c;
        const end = min(t + blockSize, numKeys);
        for (; t < end; t++) {
          const e = v128.load_splat<f32>(scores + ((<usize>t) << 2));
          a0 = f32x4.add(a0, f32x4.mul(e, v128.load(vp)));
          a1 = f32x4.add(a1, f32x4.mul(e, v128.load(vp, 16)));
          a2 = f32x4.add(a2, f32x4.mul(e, v128.load(vp, 32)));
          a3 = f32x4.add(a3, f32x4.mul(e, v128.load(vp, 48)));
          vp += rowb;
        }
      }
      v128.store(oh + c, f32x4.div(a0, sumv));
      v128.store(oh + c, f32x4.div(a1, sumv), 16);
      v128.store(oh + c, f32x4.div(a2, sumv), 32);
      v128.store(oh + c, f32x4.div(a3, sumv), 48);
    }
    for (; c < h4b; c += 16) {
      let a0 = f32x4.splat(0);
      t = 0;
      for (let b = 0; t < numKeys; b++) {
        let vp = vh + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb + c;
        const end = min(t + blockSize, numKeys);
        for (; t < end; t++) {
          a0 = f32x4.add(
            a0,
            f32x4.mul(v128.load_splat<f32>(scores + ((<usize>t) << 2)), v128.load(vp)),
          );
          vp += rowb;
        }
      }
      v128.store(oh + c, f32x4.div(a0, sumv));
    }
    for (; c < hb; c += 4) {
      let a: f32 = 0;
      t = 0;
      for (let b = 0; t < numKeys; b++) {
        let vp = vh + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb + c;
        const end = min(t + blockSize, numKeys);
        for (; t < end; t++) {
          a += load<f32>(scores + ((<usize>t) << 2)) * load<f32>(vp);
          vp += rowb;
        }
      }
      store<f32>(oh + c, a / sum);
    }
  }
}

/** First byte above the module's static data: the adapter's arena starts here (16-aligned). */
export function heapBase(): usize {
  return __heap_base;
}
