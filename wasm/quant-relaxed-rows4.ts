/**
 * Single-stream (one activation row) relaxed-SIMD sums of four weight rows per call, for
 * wasm/quant-relaxed.ts's matvecQr (relaxed build only; see that file for why every relaxed dot
 * is exact). Q4_K and Q6_K: four adjacent rows in two phases, the integer sums of each (row,
 * block) row after row so that the weights are read in address order (interleaving the four rows
 * block by block or chunk by chunk ran at 0.3-0.5x the one-row kernel once rows were longer than
 * about 512 values and streamed from memory: the prefetcher lost them), stored as i32x4 partials
 * at p (64 bytes a block), then per block the epilogue once for the four rows. Q8_0 and Q4_0:
 * one row from each quarter of the matrix, their blocks read in turn (four streams in address
 * order, as wasm/quant-matvec-rows4.ts). The epilogue in lanes either way: one isum4 (or int16
 * fold) instead of four horizontal sums, the four scales converted by one h2f4, the float steps as
 * f32x4 operations (lane r: row r, each lane the one-row kernel's rounded operations in its
 * order, so the same bits) and the four outputs stored at once.
 */

import { h2f4at, isum4, storeLanes } from "./quant-dot";
import { h2f4 } from "./quant-f16";
import { HI2, M, NIB8 } from "./quant-matvec";
import { block8r, dot2, q6Scales } from "./quant-relaxed";

/** A block's scales as int16 (Q4_K: eight, Q6_K: sixteen). */
const R4 = memory.data(32, 16);

/** Byte masks for the Q4_K mins words (q4kScaleBytes' 0x3f3f3f3f, 0x03030303), 16 bytes each. */
const K4 = memory.data<u8>([
  63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
  3, 3, 3, 3, 3,
]);

/**
 * One Q6_K block's integer sum as i32x4 partials into o (dotQ6_Kr's s: the 32 * sum_g sc_g *
 * bsum_g offset first, then four passes of 64 values, the block's scales as int16 at R4; value
 * 32k + 16p + i of half h lies in sub-block 8h + 2k + p). The passes are written out so that
 * every address is a constant offset from w or a (binaryen does not inline a function this size
 * called four times, and the pass index's shifts cost as much as the loads). The partials are
 * stored after each pass: V8 keeps loads after a store below it, so it cannot hoist the next
 * pass's loads above this pass's arithmetic and spill them.
 */
function q6Block(w: usize, a: usize, o: usize): void {
  let t = q6Scales(w, a, R4);
  const m4 = v128.load(M + NIB8);
  const m30 = v128.load(M + HI2);
  {
    // pass: ql at 0, qh at 128, x at 4, scales from sub-block 0 on in steps of 2
    const qa = v128.load(w, 0);
    const qb = v128.load(w, 0 + 32);
    const hb = v128.load(w, 128);
    const q0 = v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30));
    const q1 = v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30));
    const q2 = v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30));
    const q3 = v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4), q0), v128.load16_splat(R4, 0)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 32), q1), v128.load16_splat(R4, 4)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 64), q2), v128.load16_splat(R4, 8)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 96), q3), v128.load16_splat(R4, 12)));
    v128.store(o, t);
  }
  {
    // pass: ql at 16, qh at 144, x at 20, scales from sub-block 1 on in steps of 2
    const qa = v128.load(w, 16);
    const qb = v128.load(w, 16 + 32);
    const hb = v128.load(w, 144);
    const q0 = v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30));
    const q1 = v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30));
    const q2 = v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30));
    const q3 = v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 20), q0), v128.load16_splat(R4, 2)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 32), q1), v128.load16_splat(R4, 6)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 64), q2), v128.load16_splat(R4, 10)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 96), q3), v128.load16_splat(R4, 14)));
    v128.store(o, t);
  }
  {
    // pass: ql at 64, qh at 160, x at 132, scales from sub-block 8 on in steps of 2
    const qa = v128.load(w, 64);
    const qb = v128.load(w, 64 + 32);
    const hb = v128.load(w, 160);
    const q0 = v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30));
    const q1 = v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30));
    const q2 = v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30));
    const q3 = v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 132), q0), v128.load16_splat(R4, 16)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 32), q1), v128.load16_splat(R4, 20)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 64), q2), v128.load16_splat(R4, 24)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 96), q3), v128.load16_splat(R4, 28)),
    );
    v128.store(o, t);
  }
  {
    // pass: ql at 80, qh at 176, x at 148, scales from sub-block 9 on in steps of 2
    const qa = v128.load(w, 80);
    const qb = v128.load(w, 80 + 32);
    const hb = v128.load(w, 176);
    const q0 = v128.or(v128.and(qa, m4), v128.and(i16x8.shl(hb, 4), m30));
    const q1 = v128.or(v128.and(qb, m4), v128.and(i16x8.shl(hb, 2), m30));
    const q2 = v128.or(v128.and(i16x8.shr_u(qa, 4), m4), v128.and(hb, m30));
    const q3 = v128.or(v128.and(i16x8.shr_u(qb, 4), m4), v128.and(i16x8.shr_u(hb, 2), m30));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 148), q0), v128.load16_splat(R4, 18)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 32), q1), v128.load16_splat(R4, 22)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 64), q2), v128.load16_splat(R4, 26)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 96), q3), v128.load16_splat(R4, 30)),
    );
    v128.store(o, t);
  }
}

/**
 * Q6_K rows w, w + wr, w + 2 wr, w + 3 wr (wr = n / 256 blocks of 210 bytes) against the Q8_K
 * activation row a into o .. o + 12, with n / 4 bytes of scratch at p: per block, acc + (d_w *
 * d_x) * f32(s) in lane r for row r.
 */
export function dotQ6_Kr4(w: usize, wr: usize, a: usize, n: i32, o: usize, p: usize): void {
  const nb = <usize>(n >> 8);
  for (let r: usize = 0, wj = w; r < 64; r += 16) {
    for (let b: usize = 0; b < nb; b++, wj += 210) q6Block(wj, a + b * 292, p + (b << 6) + r);
  }
  q6Epilogue4(w, wr, a, nb, o, p);
}

/**
 * The float steps of four Q6_K rows (w, w + wr, w + 2 wr, w + 3 wr: their d at byte 208 of each
 * block) from their integer sums as i32x4 partials at p (64 bytes a block), against the Q8_K
 * activation row a, into o .. o + 12: per block, acc + (d_w * d_x) * f32(s) in lane r for row r.
 */
export function q6Epilogue4(w: usize, wr: usize, a: usize, nb: usize, o: usize, p: usize): void {
  let acc = f32x4.splat(0);
  for (let b: usize = 0; b < nb; b++, w += 210, a += 292, p += 64) {
    const s = isum4(v128.load(p), v128.load(p, 16), v128.load(p, 32), v128.load(p, 48));
    const dd = f32x4.mul(h2f4at(w + 208, wr), f32x4.splat(load<f32>(a)));
    acc = f32x4.add(acc, f32x4.mul(dd, f32x4.convert_i32x4_s(s)));
  }
  v128.store(o, acc);
}

/**
 * Sub-blocks 2c (low nibbles) and 2c + 1 (high) of one Q4_K row's 64-value chunk at q against the
 * activations at x (dotQ4_Kr's inner step), times their scales (int16 at s and s + 2), added to t.
 */
function q4kChunk(q: usize, x: usize, s: usize, t: v128): v128 {
  const m = v128.load(M + NIB8);
  const q0 = v128.load(q);
  const q1 = v128.load(q, 16);
  const e = i16x8.add(dot2(v128.load(x), v128.and(q0, m)), dot2(v128.load(x, 16), v128.and(q1, m)));
  const o = i16x8.add(
    dot2(v128.load(x, 32), v128.and(i16x8.shr_u(q0, 4), m)),
    dot2(v128.load(x, 48), v128.and(i16x8.shr_u(q1, 4), m)),
  );
  t = i32x4.add(t, i32x4.dot_i16x8_s(e, v128.load16_splat(s)));
  return i32x4.add(t, i32x4.dot_i16x8_s(o, v128.load16_splat(s, 2)));
}

/**
 * Q4_K rows w, w + wr, w + 2 wr, w + 3 wr (wr = n / 256 blocks of 144 bytes) against the Q8_K
 * activation row a into o .. o + 12, with n / 4 bytes of scratch at p. The integer sums as
 * dotQ4_Kr's, row by row. Then per block the four rows' first 16 bytes (d, dmin and the 12 scale
 * bytes) are transposed into one 32-bit word per row per lane, so that the mins' share of
 * q4kScaleBytes' bit steps runs once for the four rows, and the mins term m = sum_g mn_g *
 * (bsum_2g + bsum_2g+1) is two i32x4.dot_i16x8_s per four sub-blocks against the pair sums
 * (|pair| <= 2 * 16 * 127, exact in int16). Lane r: acc + (d * d_x) * f32(s), then - (dmin *
 * d_x) * f32(m), as dotQ4_Kr.
 */
export function dotQ4_Kr4(w: usize, wr: usize, a: usize, n: i32, o: usize, p: usize): void {
  const nb = <usize>(n >> 8);
  const ae = a + 4 + nb * 292;
  for (let r: usize = 0, wj = w; r < 64; r += 16) {
    for (let ab = a + 4, pb = p + r; ab < ae; ab += 292, wj += 144, pb += 64) {
      // the eight scales (q4kScaleBytes' first two words) as int16 at R4
      const u0 = load<u32>(wj, 4);
      const u2 = load<u32>(wj, 12);
      const s47 = (u2 & 0x0f0f0f0f) | (((u0 >> 6) & 0x03030303) << 4);
      const sc = <u64>(u0 & 0x3f3f3f3f) | ((<u64>s47) << 32);
      v128.store(R4, i16x8.extend_low_i8x16_u(i64x2.splat(sc)));
      let t = i32x4.splat(0);
      for (let c: usize = 0, q = wj + 16, x = ab, sr = R4; c < 4; c++, q += 32, x += 64, sr += 4) {
        t = q4kChunk(q, x, sr, t);
      }
      v128.store(pb, t);
    }
  }
  let acc = f32x4.splat(0);
  for (let b: usize = 0; b < nb; b++, w += 144, a += 292, p += 64) {
    const r0 = v128.load(w);
    const r1 = v128.load(w + wr);
    const r2 = v128.load(w + 2 * wr);
    const r3 = v128.load(w + 3 * wr);
    const l01 = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5);
    const l23 = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5);
    const h01 = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7);
    const h23 = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
    const dh = v128.shuffle<i64>(l01, l23, 0, 2); // d | dmin << 16, lane r row r
    const u1 = v128.shuffle<i64>(h01, h23, 0, 2);
    const u2 = v128.shuffle<i64>(h01, h23, 1, 3);
    // q4kScaleBytes' mins words: 0..3 and 4..7 of row r in lane r
    const mn03 = v128.and(u1, v128.load(K4));
    const mn47 = v128.or(
      v128.and(i32x4.shr_u(u2, 4), v128.load(M + NIB8)),
      i32x4.shl(v128.and(i32x4.shr_u(u1, 6), v128.load(K4, 16)), 4),
    );
    const p03 = i32x4.extadd_pairwise_i16x8_s(v128.load(a, 260));
    const p47 = i32x4.extadd_pairwise_i16x8_s(v128.load(a, 276));
    const pp03 = i16x8.narrow_i32x4_s(p03, p03);
    const pp47 = i16x8.narrow_i32x4_s(p47, p47);
    // lanes: rows 0, 0, 1, 1 (lo) and 2, 2, 3, 3 (hi), each two sub-blocks' mins terms
    const lo = i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(mn03), pp03),
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(mn47), pp47),
    );
    const hi = i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(mn03), pp03),
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(mn47), pp47),
    );
    const m = i32x4.add(
      v128.shuffle<i32>(lo, hi, 0, 2, 4, 6),
      v128.shuffle<i32>(lo, hi, 1, 3, 5, 7),
    );
    const s = isum4(v128.load(p), v128.load(p, 16), v128.load(p, 32), v128.load(p, 48));
    const dx = f32x4.splat(load<f32>(a));
    const d = h2f4(dh); // h2f4 reads the low 16 bits of each lane
    const dmin = h2f4(i32x4.shr_u(dh, 16));
    acc = f32x4.add(acc, f32x4.mul(f32x4.mul(d, dx), f32x4.convert_i32x4_s(s)));
    acc = f32x4.sub(acc, f32x4.mul(f32x4.mul(dmin, dx), f32x4.convert_i32x4_s(m)));
  }
  v128.store(o, acc);
}

/** int16 partials of one Q4_0 block (nibbles 0..15 at w + 2) times its activations at x. */
function q4Block(w: usize, x: usize, m: v128): v128 {
  const q = v128.load(w, 2);
  const lo = dot2(v128.load(x), v128.and(q, m));
  return i16x8.add(lo, dot2(v128.load(x, 16), v128.and(i16x8.shr_u(q, 4), m)));
}

/**
 * Q4_0 rows w, w + rs, w + 2 rs, w + 3 rs against the Q8_0 activation row a, with its d_x and
 * block sums at u (quant-relaxed.ts's blockSums), into o, o + os, o + 2 os, o + 3 os. Per block
 * the four rows' two dot2 of the nibbles with q added in int16 (within 4 * 15 * 128 a lane), the
 * four rows folded into one vector in int16 (16 products a lane, within 32767) and widened once,
 * less 8 * sum(q) (as dotQ4x4r), then lane r: acc + f32(s) * (d_w * d_x), as dotQ4r.
 */
export function dotQ4_0r4(
  w: usize,
  rs: usize,
  a: usize,
  u: usize,
  n: i32,
  o: usize,
  os: usize,
): void {
  const nb = <usize>(n >> 5);
  const sums = u + (nb << 2);
  const m = v128.load(M + NIB8);
  let acc = f32x4.splat(0);
  for (let b: usize = 0, x = a + 4; b < nb; b++, w += 18, x += 36) {
    const d0 = q4Block(w, x, m);
    const d1 = q4Block(w + rs, x, m);
    const d2 = q4Block(w + 2 * rs, x, m);
    const d3 = q4Block(w + 3 * rs, x, m);
    const h01 = i16x8.add(v128.shuffle<i64>(d0, d1, 0, 2), v128.shuffle<i64>(d0, d1, 1, 3));
    const h23 = i16x8.add(v128.shuffle<i64>(d2, d3, 0, 2), v128.shuffle<i64>(d2, d3, 1, 3));
    const h = i16x8.add(
      v128.shuffle<i32>(h01, h23, 0, 2, 4, 6),
      v128.shuffle<i32>(h01, h23, 1, 3, 5, 7),
    );
    const s8 = i32x4.shl(v128.load32_splat(sums + (b << 2)), 3);
    const s = i32x4.sub(i32x4.extadd_pairwise_i16x8_s(h), s8);
    const dd = f32x4.mul(h2f4at(w, rs), v128.load32_splat(u + (b << 2)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  storeLanes(o, os, acc);
}

/**
 * Q8_0 rows w, w + rs, w + 2 rs, w + 3 rs against the split activation row at u (quant-relaxed.ts's
 * splitQ8) into o, o + os, o + 2 os, o + 3 os, read in turn as dotQ4_0r4's: per block the four
 * rows' block8r sums by one isum4, their d_w by one h2f4, then lane r: acc + f32(s) * (d_w *
 * d_x), as dotQ8r.
 */
export function dotQ8_0r4(w: usize, rs: usize, u: usize, n: i32, o: usize, os: usize): void {
  const nb = <usize>(n >> 5);
  const dxs = u + ((<usize>n) << 1);
  let acc = f32x4.splat(0);
  for (let b: usize = 0, x = u; b < nb; b++, w += 34, x += 64) {
    const s = isum4(
      block8r(w, x),
      block8r(w + rs, x),
      block8r(w + 2 * rs, x),
      block8r(w + 3 * rs, x),
    );
    const dd = f32x4.mul(h2f4at(w, rs), v128.load32_splat(dxs + (b << 2)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  storeLanes(o, os, acc);
}
