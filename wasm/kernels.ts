/**
 * WebAssembly SIMD kernels (AssemblyScript source of wasm/kernels.wasm; build: `npm run build:wasm`).
 *
 * Owns the hot loops behind `createWasmKernels` (shared/model/kernels-wasm.ts): matmul, SwiGLU
 * and paged attention over byte offsets into this module's own linear memory. The module
 * allocates nothing; the adapter bump-allocates buffers above `heapBase()`.
 *
 * Bit-exactness contract (mirrored op for op by shared/model/kernels-js.ts, so that the JS and
 * wasm kernels give bit-identical results):
 * - every operation is a separately rounded f32 operation (wasm never fuses a mul and an add);
 * - a dot product over k = 0..n-1 keeps four lane sums, lane l holding k = l, l+4, l+8, ... for
 *   k < n & ~3, reduced as (l0 + l1) + (l2 + l3), then adds the tail k = n & ~3 .. n-1 in order;
 * - exp is `expf` below (Cephes-style polynomial), not Mathf.exp.
 * The order depends only on n, never on m, on the other rows, on blocking or on alignment.
 */

import { storeLanes } from "./quant-dot";
import { packQ6kLanes as packLanes } from "./quant-lanes";

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
 * One row of X against four rows of W `ws` bytes apart: out[r] = x . w_r, stored at o + r * os.
 */
function tile1x4(o: usize, os: usize, x: usize, w0: usize, ws: usize, n4b: usize, nb: usize): void {
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
  storeLanes(o, os, s);
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
    // Matvec (single-stream decode): four rows at a time, one from each quarter of W (rows j,
    // j + e, j + 2e, j + 3e). The hardware prefetcher follows one stream per 4 KiB page, and
    // adjacent rows share pages: streamed from memory, four adjacent rows ran at less than half
    // the bandwidth of four rows in separate pages (and eight at about three quarters).
    const e = d >> 2;
    const es = <usize>e;
    for (let j = 0; j < e; j++) {
      tile1x4(out + ((<usize>j) << 2), es << 2, x, w + <usize>j * nb, es * nb, n4b, nb);
    }
    j0 = e << 2;
  }
  // Columns in blocks of four (W rows stay in L1 while the X rows stream past), rows in pairs.
  for (let j = j0; j < d4; j += 4) {
    const wj = w + <usize>j * nb;
    const oj = out + ((<usize>j) << 2);
    let i = 0;
    for (; i + 2 <= m; i += 2) {
      tile2x4(oj + <usize>i * db, db, x + <usize>i * nb, nb, wj, nb, n4b, nb);
    }
    if (i < m) tile1x4(oj + <usize>i * db, 4, x + <usize>i * nb, wj, nb, n4b, nb);
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

/**
 * The constants of `expf4`, four lanes each, kept in memory: V8 rebuilds a `v128.const` with
 * several instructions at every use inside a loop, whereas a load from a constant address is one.
 */
const EXPC = memory.data<f32>(
  [
    LOG2E,
    LOG2E,
    LOG2E,
    LOG2E,
    0.5,
    0.5,
    0.5,
    0.5,
    LN2_HI,
    LN2_HI,
    LN2_HI,
    LN2_HI,
    LN2_LO,
    LN2_LO,
    LN2_LO,
    LN2_LO,
    P0,
    P0,
    P0,
    P0,
    P1,
    P1,
    P1,
    P1,
    P2,
    P2,
    P2,
    P2,
    P3,
    P3,
    P3,
    P3,
    P4,
    P4,
    P4,
    P4,
    P5,
    P5,
    P5,
    P5,
    1.0,
    1.0,
    1.0,
    1.0,
    12582912.0,
    12582912.0,
    12582912.0,
    12582912.0, // 1.5 * 2^23
    -87.0,
    -87.0,
    -87.0,
    -87.0,
    88.0, // offset 208 (swiglu)
    88.0,
    88.0,
    88.0,
    Infinity, // offset 224 (swiglu)
    Infinity,
    Infinity,
    Infinity,
  ],
  16,
);

/**
 * `expf` on four lanes, lane for lane the same bits, for lanes x <= 88 or NaN (the softmax calls
 * it on s - max <= 0; swiglu selects +Infinity itself): lanes above 88 are not clamped to
 * +Infinity. Below -87 gives 0.
 */
function expf4(x: v128): v128 {
  const n = f32x4.floor(f32x4.add(f32x4.mul(x, v128.load(EXPC)), v128.load(EXPC, 16)));
  let r = f32x4.sub(x, f32x4.mul(n, v128.load(EXPC, 32)));
  r = f32x4.sub(r, f32x4.mul(n, v128.load(EXPC, 48)));
  const z = f32x4.mul(r, r);
  let p = f32x4.add(f32x4.mul(v128.load(EXPC, 64), r), v128.load(EXPC, 80));
  p = f32x4.add(f32x4.mul(p, r), v128.load(EXPC, 96));
  p = f32x4.add(f32x4.mul(p, r), v128.load(EXPC, 112));
  p = f32x4.add(f32x4.mul(p, r), v128.load(EXPC, 128));
  p = f32x4.add(f32x4.mul(p, r), v128.load(EXPC, 144));
  const one = v128.load(EXPC, 160);
  p = f32x4.add(f32x4.add(f32x4.mul(p, z), r), one);
  // 2^n for an integral n in [-126, 127]: n + 1.5 * 2^23 is exact and its bits end in n (two's
  // complement, low 23 bits), so shifting them left by 23 leaves n << 23; adding the bits of 1.0
  // (127 << 23) gives the bits of 2^n. Lanes outside [-87, 88] are selected over below.
  const pow2 = i32x4.add(i32x4.shl(f32x4.add(n, v128.load(EXPC, 176)), 23), one);
  const y = v128.and(f32x4.mul(p, pow2), f32x4.ge(x, v128.load(EXPC, 192))); // 0 below -87, NaN
  return v128.bitselect(x, y, f32x4.ne(x, x)); // NaN stays NaN
}

// ---------------------------------------------------------------------------------------------
// swiglu

/**
 * SwiGLU over `m` fused rows: gu row r is [gate (ff) | up (ff)] at gu + r * 2ff floats, and
 * out[r * ff + i] = silu(g) * u with g = gate[i], u = up[i]. Per element, in f32 (the contract,
 * mirrored by `swigluJs` in kernels-js.ts):
 *   e = expf(-g)   (the scalar `expf` above: 0 below -87, +Infinity above 88);
 *   d = 1 + e;   s = g / d;   out = s * u.
 * Elements i < ff & ~3 go four at a time through `expf4` (with lanes where -g > 88 set to
 * +Infinity, as `expf` does), the ff % 4 tail through `expf`: the same bits either way.
 * `out` must not overlap `gu`.
 */
export function swiglu(out: usize, gu: usize, m: i32, ff: i32): void {
  const fb = (<usize>ff) << 2;
  const f4b = (<usize>(ff & ~3)) << 2;
  for (let r = 0; r < m; r++) {
    const g = gu + <usize>r * (fb << 1);
    const o = out + <usize>r * fb;
    let i: usize = 0;
    for (; i < f4b; i += 16) {
      const gv = v128.load(g + i);
      const x = f32x4.neg(gv);
      const e = v128.bitselect(v128.load(EXPC, 224), expf4(x), f32x4.gt(x, v128.load(EXPC, 208)));
      const d = f32x4.add(v128.load(EXPC, 160), e);
      v128.store(o + i, f32x4.mul(f32x4.div(gv, d), v128.load(g + fb + i)));
    }
    for (; i < fb; i += 4) {
      const gs = load<f32>(g + i);
      store<f32>(o + i, (gs / (<f32>1.0 + expf(-gs))) * load<f32>(g + fb + i));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// attention

/**
 * Causal attention of one query token over `numKeys` positions of a paged KV cache.
 *   q, out: (numHeads * headDim) f32; kCache, vCache: (rows, numKvHeads * headDim) f32;
 *   blockTable: i32 block ids, position t at row blockTable[t / blockSize] * blockSize + t % blockSize;
 *   scores: numKeys f32 of scratch.
 *
 * Reduction order (the contract; kernels-js.ts `attentionJs` computes exactly this, head by head).
 * Per head h, with KV head h / (numHeads / numKvHeads), and t = 0 .. numKeys-1 the position:
 *   s_t = dot(q_h, k_t) * scale, scale = 1 / sqrt(headDim), dot in the canonical order above
 *         (four lane sums from 0, (l0 + l1) + (l2 + l3), then the headDim % 4 tail in order);
 *   m = max_t s_t (exact, so its order is free);
 *   e_t = expf(s_t - m);
 *   sum = (((0 + e_0) + e_1) + e_2) + ...                     (one chain, increasing t);
 *   acc[c] = (((0 + e_0 * v_0[c]) + e_1 * v_1[c]) + ...)     (one chain per column, increasing t);
 *   out_h[c] = acc[c] / sum.
 * Every operation is one rounded f32 operation. Nothing depends on the block layout (the block
 * table only says where row t lives), on the other heads, or on how the heads are grouped below.
 *
 * Speed: the chains above are latency-bound one head at a time, so the heads are interleaved
 * (independent chains side by side): scores live in a position-major scratch, lanes = four query
 * heads, so the max, exp and sum steps run four heads per f32x4, and the V pass accumulates up to
 * eight f32x4 chains (several heads and columns) per sweep over the positions, block by block.
 * numKeys >= 1 and numHeads % numKvHeads == 0 (the adapter checks). `out` may equal `q`: a head's
 * output is written only after the scores of its whole chunk of heads are done.
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
  // Heads in groups of four (lanes); the rest, and contexts too long for the scratch, one by one.
  // Heads per chunk: a multiple of 4 such that (numKeys + 1) rows of them fit the scratch.
  const quadHeads = numHeads & ~3;
  const maxChunk = (SCRATCH_FLOATS / (numKeys + 1)) & ~3;
  if (maxChunk < 4 || quadHeads === 0) {
    attentionPerHead(
      out,
      q,
      kCache,
      vCache,
      blockTable,
      numKeys,
      numHeads,
      numKvHeads,
      headDim,
      blockSize,
      scores,
      0,
    );
    return;
  }
  const group = numHeads / numKvHeads;
  const hb = (<usize>headDim) << 2;
  const h4b = (<usize>(headDim & ~3)) << 2;
  const rowb = <usize>numKvHeads * hb;
  const blockb = <usize>blockSize * rowb;
  const scale: f32 = <f32>1.0 / Mathf.sqrt(<f32>headDim);
  const scr = scratchBase();
  for (let h0 = 0; h0 < quadHeads; h0 += maxChunk) {
    const hEnd = min(h0 + maxChunk, quadHeads);
    // Scratch rows: row t holds s_t (then e_t) of heads h0 .. hEnd - 1; then one row of sums.
    const sb = (<usize>(hEnd - h0)) << 2;
    const sums = scr + <usize>numKeys * sb;
    for (let hq = h0; hq < hEnd; hq += 4) {
      const sp = scr + ((<usize>(hq - h0)) << 2);
      const qa = q + <usize>hq * hb;
      const ka = <usize>(hq / group) * hb;
      const kb = <usize>((hq + 1) / group) * hb;
      const kc = <usize>((hq + 2) / group) * hb;
      const kd = <usize>((hq + 3) / group) * hb;
      let mx: v128;
      if (headDim === 8) {
        mx = scores4d8(
          sp,
          sb,
          qa,
          ka,
          kb,
          kc,
          kd,
          kCache,
          blockTable,
          numKeys,
          blockSize,
          blockb,
          rowb,
          scale,
        );
      } else if (headDim === 16) {
        mx = scores4d16(
          sp,
          sb,
          qa,
          ka,
          kb,
          kc,
          kd,
          kCache,
          blockTable,
          numKeys,
          blockSize,
          blockb,
          rowb,
          scale,
        );
      } else {
        mx = scores4(
          sp,
          sb,
          qa,
          qa + hb,
          qa + 2 * hb,
          qa + 3 * hb,
          ka,
          kb,
          kc,
          kd,
          kCache,
          blockTable,
          numKeys,
          blockSize,
          blockb,
          rowb,
          h4b,
          hb,
          scale,
        );
      }
      v128.store(sums + ((<usize>(hq - h0)) << 2), softmax4(sp, sb, numKeys, mx));
    }

    // sum_t e_t v_t / sum -> out, several heads and columns per sweep.
    let h = h0;
    if (headDim === 8) {
      for (; h + 4 <= hEnd; h += 4) {
        const o = out + <usize>h * hb;
        vsum4x2(
          o,
          o + hb,
          o + 2 * hb,
          o + 3 * hb,
          scr + ((<usize>(h - h0)) << 2),
          sb,
          sums + ((<usize>(h - h0)) << 2),
          <usize>(h / group) * hb,
          <usize>((h + 1) / group) * hb,
          <usize>((h + 2) / group) * hb,
          <usize>((h + 3) / group) * hb,
          vCache,
          blockTable,
          numKeys,
          blockSize,
          blockb,
          rowb,
        );
      }
    } else if (headDim === 16) {
      for (; h + 2 <= hEnd; h += 2) {
        const o = out + <usize>h * hb;
        const ep = scr + ((<usize>(h - h0)) << 2);
        vsum2x4(
          o,
          o + hb,
          ep,
          sb,
          load<f32>(sums + ((<usize>(h - h0)) << 2)),
          load<f32>(sums + ((<usize>(h + 1 - h0)) << 2)),
          <usize>(h / group) * hb,
          <usize>((h + 1) / group) * hb,
          vCache,
          blockTable,
          numKeys,
          blockSize,
          blockb,
          rowb,
        );
      }
    }
    for (; h < hEnd; h++) {
      const o = out + <usize>h * hb;
      const ep = scr + ((<usize>(h - h0)) << 2);
      const sum = load<f32>(sums + ((<usize>(h - h0)) << 2));
      const vh = vCache + <usize>(h / group) * hb;
      let c: usize = 0;
      for (; c + 128 <= h4b; c += 128) {
        vsum1x8(o + c, ep, sb, sum, vh + c, blockTable, numKeys, blockSize, blockb, rowb);
      }
      for (; c + 64 <= h4b; c += 64) {
        vsum1x4(o + c, ep, sb, sum, vh + c, blockTable, numKeys, blockSize, blockb, rowb);
      }
      for (; c < h4b; c += 16) {
        vsum1x1(o + c, ep, sb, sum, vh + c, blockTable, numKeys, blockSize, blockb, rowb);
      }
      for (; c < hb; c += 4) {
        vsum1s(o + c, ep, sb, sum, vh + c, blockTable, numKeys, blockSize, blockb, rowb);
      }
    }
  }
  if (quadHeads < numHeads) {
    attentionPerHead(
      out,
      q,
      kCache,
      vCache,
      blockTable,
      numKeys,
      numHeads,
      numKvHeads,
      headDim,
      blockSize,
      scores,
      quadHeads,
    );
  }
}

/** Bytes of attention scratch reserved between the static data and the arena (see heapBase). */
const SCRATCH_BYTES: usize = 128 << 10;
const SCRATCH_FLOATS: i32 = <i32>(SCRATCH_BYTES >> 2);

/** Start of the attention scratch (16-aligned, just above the static data). */
function scratchBase(): usize {
  return (__heap_base + 15) & ~15;
}

/**
 * Scores of four query heads (lanes) at every position: row t of the scratch (byte stride `sb`,
 * from `sp`) gets [s_t of each head]. q0..q3: the heads' query rows; k0..k3: byte offsets of their
 * KV heads within a cache row. Returns the lane-wise max.
 */
function scores4(
  sp: usize,
  sb: usize,
  q0: usize,
  q1: usize,
  q2: usize,
  q3: usize,
  k0: usize,
  k1: usize,
  k2: usize,
  k3: usize,
  kCache: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
  h4b: usize,
  hb: usize,
  scale: f32,
): v128 {
  const scale4 = f32x4.splat(scale);
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let kp = kCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      let a0 = f32x4.splat(0);
      let a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0);
      let a3 = f32x4.splat(0);
      for (let c: usize = 0; c < h4b; c += 16) {
        a0 = f32x4.add(a0, f32x4.mul(v128.load(q0 + c), v128.load(kp + k0 + c)));
        a1 = f32x4.add(a1, f32x4.mul(v128.load(q1 + c), v128.load(kp + k1 + c)));
        a2 = f32x4.add(a2, f32x4.mul(v128.load(q2 + c), v128.load(kp + k2 + c)));
        a3 = f32x4.add(a3, f32x4.mul(v128.load(q3 + c), v128.load(kp + k3 + c)));
      }
      let s = hsum4(a0, a1, a2, a3);
      for (let c = h4b; c < hb; c += 4) {
        s = f32x4.add(
          s,
          f32x4.mul(
            gather4(q0 + c, q1 + c, q2 + c, q3 + c),
            gather4(kp + k0 + c, kp + k1 + c, kp + k2 + c, kp + k3 + c),
          ),
        );
      }
      s = f32x4.mul(s, scale4);
      v128.store(sp, s);
      mx = f32x4.pmax(mx, s);
      sp += sb;
      kp += rowb;
    }
  }
  return mx;
}

/**
 * `scores4` for headDim 8 and the four consecutive query heads from `q0`, queries in registers.
 * Each lane sum starts from its first product instead of 0 + product: the two differ only for a
 * product of -0, and then at most in the sign of a zero score, which changes neither the max's
 * use (s - max) nor any e_t (expf(+-0) = 1, and s - max = -max for s = +-0 when max != 0), so the
 * outputs are the contract's bit for bit.
 */
function scores4d8(
  sp: usize,
  sb: usize,
  q0: usize,
  k0: usize,
  k1: usize,
  k2: usize,
  k3: usize,
  kCache: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
  scale: f32,
): v128 {
  const scale4 = f32x4.splat(scale);
  const q0a = v128.load(q0);
  const q0b = v128.load(q0, 16);
  const q1a = v128.load(q0, 32);
  const q1b = v128.load(q0, 48);
  const q2a = v128.load(q0, 64);
  const q2b = v128.load(q0, 80);
  const q3a = v128.load(q0, 96);
  const q3b = v128.load(q0, 112);
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let kp = kCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const p0 = kp + k0;
      const p1 = kp + k1;
      const p2 = kp + k2;
      const p3 = kp + k3;
      const a0 = f32x4.add(f32x4.mul(q0a, v128.load(p0)), f32x4.mul(q0b, v128.load(p0, 16)));
      const a1 = f32x4.add(f32x4.mul(q1a, v128.load(p1)), f32x4.mul(q1b, v128.load(p1, 16)));
      const a2 = f32x4.add(f32x4.mul(q2a, v128.load(p2)), f32x4.mul(q2b, v128.load(p2, 16)));
      const a3 = f32x4.add(f32x4.mul(q3a, v128.load(p3)), f32x4.mul(q3b, v128.load(p3, 16)));
      const s = f32x4.mul(hsum4(a0, a1, a2, a3), scale4);
      v128.store(sp, s);
      mx = f32x4.pmax(mx, s);
      sp += sb;
      kp += rowb;
    }
  }
  return mx;
}

/** `scores4d8` for headDim 16 (same first-product start; queries loaded from memory). */
function scores4d16(
  sp: usize,
  sb: usize,
  q0: usize,
  k0: usize,
  k1: usize,
  k2: usize,
  k3: usize,
  kCache: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
  scale: f32,
): v128 {
  const scale4 = f32x4.splat(scale);
  let mx = f32x4.splat(-Infinity);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let kp = kCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const p0 = kp + k0;
      const p1 = kp + k1;
      const p2 = kp + k2;
      const p3 = kp + k3;
      let a0 = f32x4.mul(v128.load(q0), v128.load(p0));
      let a1 = f32x4.mul(v128.load(q0, 64), v128.load(p1));
      let a2 = f32x4.mul(v128.load(q0, 128), v128.load(p2));
      let a3 = f32x4.mul(v128.load(q0, 192), v128.load(p3));
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0, 16), v128.load(p0, 16)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q0, 80), v128.load(p1, 16)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q0, 144), v128.load(p2, 16)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q0, 208), v128.load(p3, 16)));
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0, 32), v128.load(p0, 32)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q0, 96), v128.load(p1, 32)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q0, 160), v128.load(p2, 32)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q0, 224), v128.load(p3, 32)));
      a0 = f32x4.add(a0, f32x4.mul(v128.load(q0, 48), v128.load(p0, 48)));
      a1 = f32x4.add(a1, f32x4.mul(v128.load(q0, 112), v128.load(p1, 48)));
      a2 = f32x4.add(a2, f32x4.mul(v128.load(q0, 176), v128.load(p2, 48)));
      a3 = f32x4.add(a3, f32x4.mul(v128.load(q0, 240), v128.load(p3, 48)));
      const s = f32x4.mul(hsum4(a0, a1, a2, a3), scale4);
      v128.store(sp, s);
      mx = f32x4.pmax(mx, s);
      sp += sb;
      kp += rowb;
    }
  }
  return mx;
}

/** e_t = expf(s_t - mx) in place over the rows of four lanes; returns the lane sums in t order. */
function softmax4(sp: usize, sb: usize, numKeys: i32, mx: v128): v128 {
  let sum = f32x4.splat(0);
  for (let t = 0; t < numKeys; t++) {
    const e = expf4(f32x4.sub(v128.load(sp), mx));
    v128.store(sp, e);
    sum = f32x4.add(sum, e);
    sp += sb;
  }
  return sum;
}

/**
 * headDim 8: four heads (outputs o0..o3, e_t in the four lanes of the row at `ep`, sums in the four
 * floats at `sums`, KV byte offsets v0..v3 within a cache row), two f32x4 each: eight chains.
 */
function vsum4x2(
  o0: usize,
  o1: usize,
  o2: usize,
  o3: usize,
  ep: usize,
  sb: usize,
  sums: usize,
  v0: usize,
  v1: usize,
  v2: usize,
  v3: usize,
  vCache: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a0 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const e = v128.load(ep);
      let es = v128.shuffle<f32>(e, e, 0, 0, 0, 0);
      a0 = f32x4.add(a0, f32x4.mul(es, v128.load(vp + v0)));
      b0 = f32x4.add(b0, f32x4.mul(es, v128.load(vp + v0, 16)));
      es = v128.shuffle<f32>(e, e, 1, 1, 1, 1);
      a1 = f32x4.add(a1, f32x4.mul(es, v128.load(vp + v1)));
      b1 = f32x4.add(b1, f32x4.mul(es, v128.load(vp + v1, 16)));
      es = v128.shuffle<f32>(e, e, 2, 2, 2, 2);
      a2 = f32x4.add(a2, f32x4.mul(es, v128.load(vp + v2)));
      b2 = f32x4.add(b2, f32x4.mul(es, v128.load(vp + v2, 16)));
      es = v128.shuffle<f32>(e, e, 3, 3, 3, 3);
      a3 = f32x4.add(a3, f32x4.mul(es, v128.load(vp + v3)));
      b3 = f32x4.add(b3, f32x4.mul(es, v128.load(vp + v3, 16)));
      ep += sb;
      vp += rowb;
    }
  }
  let s = v128.load_splat<f32>(sums);
  v128.store(o0, f32x4.div(a0, s));
  v128.store(o0, f32x4.div(b0, s), 16);
  s = v128.load_splat<f32>(sums, 4);
  v128.store(o1, f32x4.div(a1, s));
  v128.store(o1, f32x4.div(b1, s), 16);
  s = v128.load_splat<f32>(sums, 8);
  v128.store(o2, f32x4.div(a2, s));
  v128.store(o2, f32x4.div(b2, s), 16);
  s = v128.load_splat<f32>(sums, 12);
  v128.store(o3, f32x4.div(a3, s));
  v128.store(o3, f32x4.div(b3, s), 16);
}

/** headDim 16: two heads (e_t at ep and ep + 4), four f32x4 each: eight chains. */
function vsum2x4(
  o0: usize,
  o1: usize,
  ep: usize,
  sb: usize,
  sum0: f32,
  sum1: f32,
  v0: usize,
  v1: usize,
  vCache: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vCache + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const ea = v128.load_splat<f32>(ep);
      const eb = v128.load_splat<f32>(ep, 4);
      const pa = vp + v0;
      const pb = vp + v1;
      a0 = f32x4.add(a0, f32x4.mul(ea, v128.load(pa)));
      b0 = f32x4.add(b0, f32x4.mul(eb, v128.load(pb)));
      a1 = f32x4.add(a1, f32x4.mul(ea, v128.load(pa, 16)));
      b1 = f32x4.add(b1, f32x4.mul(eb, v128.load(pb, 16)));
      a2 = f32x4.add(a2, f32x4.mul(ea, v128.load(pa, 32)));
      b2 = f32x4.add(b2, f32x4.mul(eb, v128.load(pb, 32)));
      a3 = f32x4.add(a3, f32x4.mul(ea, v128.load(pa, 48)));
      b3 = f32x4.add(b3, f32x4.mul(eb, v128.load(pb, 48)));
      ep += sb;
      vp += rowb;
    }
  }
  let s = f32x4.splat(sum0);
  v128.store(o0, f32x4.div(a0, s));
  v128.store(o0, f32x4.div(a1, s), 16);
  v128.store(o0, f32x4.div(a2, s), 32);
  v128.store(o0, f32x4.div(a3, s), 48);
  s = f32x4.splat(sum1);
  v128.store(o1, f32x4.div(b0, s));
  v128.store(o1, f32x4.div(b1, s), 16);
  v128.store(o1, f32x4.div(b2, s), 32);
  v128.store(o1, f32x4.div(b3, s), 48);
}

/** One head, eight f32x4 of columns (V column pointer `vc` already includes KV head and column). */
function vsum1x8(
  o: usize,
  ep: usize,
  sb: usize,
  sum: f32,
  vc: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let a4 = f32x4.splat(0);
  let a5 = f32x4.splat(0);
  let a6 = f32x4.splat(0);
  let a7 = f32x4.splat(0);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vc + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const e = v128.load_splat<f32>(ep);
      a0 = f32x4.add(a0, f32x4.mul(e, v128.load(vp)));
      a1 = f32x4.add(a1, f32x4.mul(e, v128.load(vp, 16)));
      a2 = f32x4.add(a2, f32x4.mul(e, v128.load(vp, 32)));
      a3 = f32x4.add(a3, f32x4.mul(e, v128.load(vp, 48)));
      a4 = f32x4.add(a4, f32x4.mul(e, v128.load(vp, 64)));
      a5 = f32x4.add(a5, f32x4.mul(e, v128.load(vp, 80)));
      a6 = f32x4.add(a6, f32x4.mul(e, v128.load(vp, 96)));
      a7 = f32x4.add(a7, f32x4.mul(e, v128.load(vp, 112)));
      ep += sb;
      vp += rowb;
    }
  }
  const s = f32x4.splat(sum);
  v128.store(o, f32x4.div(a0, s));
  v128.store(o, f32x4.div(a1, s), 16);
  v128.store(o, f32x4.div(a2, s), 32);
  v128.store(o, f32x4.div(a3, s), 48);
  v128.store(o, f32x4.div(a4, s), 64);
  v128.store(o, f32x4.div(a5, s), 80);
  v128.store(o, f32x4.div(a6, s), 96);
  v128.store(o, f32x4.div(a7, s), 112);
}

/** One head, four f32x4 of columns. */
function vsum1x4(
  o: usize,
  ep: usize,
  sb: usize,
  sum: f32,
  vc: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vc + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      const e = v128.load_splat<f32>(ep);
      a0 = f32x4.add(a0, f32x4.mul(e, v128.load(vp)));
      a1 = f32x4.add(a1, f32x4.mul(e, v128.load(vp, 16)));
      a2 = f32x4.add(a2, f32x4.mul(e, v128.load(vp, 32)));
      a3 = f32x4.add(a3, f32x4.mul(e, v128.load(vp, 48)));
      ep += sb;
      vp += rowb;
    }
  }
  const s = f32x4.splat(sum);
  v128.store(o, f32x4.div(a0, s));
  v128.store(o, f32x4.div(a1, s), 16);
  v128.store(o, f32x4.div(a2, s), 32);
  v128.store(o, f32x4.div(a3, s), 48);
}

/** One head, one f32x4 of columns. */
function vsum1x1(
  o: usize,
  ep: usize,
  sb: usize,
  sum: f32,
  vc: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a = f32x4.splat(0);
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vc + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      a = f32x4.add(a, f32x4.mul(v128.load_splat<f32>(ep), v128.load(vp)));
      ep += sb;
      vp += rowb;
    }
  }
  v128.store(o, f32x4.div(a, f32x4.splat(sum)));
}

/** One head, one column (the headDim % 4 tail). */
function vsum1s(
  o: usize,
  ep: usize,
  sb: usize,
  sum: f32,
  vc: usize,
  blockTable: usize,
  numKeys: i32,
  blockSize: i32,
  blockb: usize,
  rowb: usize,
): void {
  let a: f32 = 0;
  let t = 0;
  for (let b = 0; t < numKeys; b++) {
    let vp = vc + <usize>load<i32>(blockTable + ((<usize>b) << 2)) * blockb;
    const end = min(t + blockSize, numKeys);
    for (; t < end; t++) {
      a += load<f32>(ep) * load<f32>(vp);
      ep += sb;
      vp += rowb;
    }
  }
  store<f32>(o, a / sum);
}

/**
 * `attention` for heads hFirst .. numHeads-1, one head at a time (lanes = four positions) with
 * `scores` (numKeys floats) as the only scratch: the heads past the last group of four, and the
 * fallback for contexts too long for the scratch of the grouped path. Same results, bit for bit.
 */
function attentionPerHead(
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
  hFirst: i32,
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
  for (let h = hFirst; h < numHeads; h++) {
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

/**
 * First byte above the module's static data and the attention scratch: the adapter's arena starts
 * here (16-aligned).
 */
export function heapBase(): usize {
  return scratchBase() + SCRATCH_BYTES;
}

// ---------------------------------------------------------------------------------------------
// quantised matmul (wasm/quant.ts)

export { matmulQ } from "./quant";

/** 1 where matmulQ takes Q6_K_LANES (the relaxed build keeps Q6_K in lane order), else 0. */
export function q6kLanes(): i32 {
  return ASC_FEATURE_RELAXED_SIMD ? 1 : 0;
}

/** Rewrites nb Q6_K blocks at w as Q6_K_LANES (wasm/quant-lanes.ts; relaxed build only). */
export function packQ6kLanes(w: usize, nb: i32): void {
  if (ASC_FEATURE_RELAXED_SIMD) packLanes(w, nb);
}
