/**
 * Single-stream (one activation row) relaxed-SIMD sums of four adjacent weight rows per call, for
 * wasm/quant-relaxed.ts's matvecQr (relaxed build only; see that file for why every relaxed dot
 * is exact). The integer inner loops are those of the one-row kernels there; what four rows buy
 * is the per-block epilogue done once for the four, in lanes: one isum4 instead of four
 * horizontal sums, the four scales converted by one h2f4, the float steps as f32x4 operations
 * (lane r: row r, each lane the one-row kernel's rounded operations in its order, so the same
 * bits) and one store of the four outputs.
 */

import { isum4 } from "./quant-dot";
import { h2f4 } from "./quant-f16";
import { HI2, M, NIB8, PART } from "./quant-matvec";
import { dot2 } from "./quant-relaxed";

/** Byte masks for the Q4_K scale words (q4kScaleBytes' 0x3f3f3f3f, 0x03030303), 16 bytes each. */
const K4 = memory.data<u8>([
  63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
  3, 3, 3, 3, 3,
]);

/**
 * One Q6_K block's integer sum as i32x4 partials into o (dotQ6_Kr's s: the 32 * sum_g sc_g *
 * bsum_g offset first, then four passes of 64 values, the block's scales as int16 at PART; value
 * 32k + 16p + i of half h lies in sub-block 8h + 2k + p). The passes are written out so that
 * every address is a constant offset from w or a (binaryen does not inline a function this size
 * called four times, and the pass index's shifts cost as much as the loads). The partials are
 * stored after each pass: V8 keeps loads after a store below it, so it cannot hoist the next
 * pass's loads above this pass's arithmetic and spill them.
 */
function q6Block(w: usize, a: usize, o: usize): void {
  const sc = v128.load(w, 192);
  const sl = i16x8.extend_low_i8x16_s(sc);
  const sh = i16x8.extend_high_i8x16_s(sc);
  v128.store(PART, sl);
  v128.store(PART, sh, 16);
  let t = i32x4.add(
    i32x4.dot_i16x8_s(sl, v128.load(a, 260)),
    i32x4.dot_i16x8_s(sh, v128.load(a, 276)),
  );
  t = i32x4.sub(i32x4.splat(0), i32x4.shl(t, 5));
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
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4), q0), v128.load16_splat(PART, 0)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 32), q1), v128.load16_splat(PART, 4)));
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 64), q2), v128.load16_splat(PART, 8)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 4 + 96), q3), v128.load16_splat(PART, 12)),
    );
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
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 20), q0), v128.load16_splat(PART, 2)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 32), q1), v128.load16_splat(PART, 6)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 64), q2), v128.load16_splat(PART, 10)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 20 + 96), q3), v128.load16_splat(PART, 14)),
    );
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
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 132), q0), v128.load16_splat(PART, 16)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 32), q1), v128.load16_splat(PART, 20)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 64), q2), v128.load16_splat(PART, 24)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 132 + 96), q3), v128.load16_splat(PART, 28)),
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
    t = i32x4.add(t, i32x4.dot_i16x8_s(dot2(v128.load(a, 148), q0), v128.load16_splat(PART, 18)));
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 32), q1), v128.load16_splat(PART, 22)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 64), q2), v128.load16_splat(PART, 26)),
    );
    t = i32x4.add(
      t,
      i32x4.dot_i16x8_s(dot2(v128.load(a, 148 + 96), q3), v128.load16_splat(PART, 30)),
    );
    v128.store(o, t);
  }
}

/**
 * Q6_K rows w, w + wr, w + 2 wr, w + 3 wr against the Q8_K activation row a into o .. o + 12:
 * per block, acc + (d_w * d_x) * f32(s) in lane r for row r.
 */
export function dotQ6_Kr4(w: usize, wr: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n >> 8; b++, w += 210, a += 292) {
    for (let r: usize = 0, wj = w; r < 64; r += 16, wj += wr) q6Block(wj, a, PART + 32 + r);
    const s = isum4(
      v128.load(PART, 32),
      v128.load(PART, 48),
      v128.load(PART, 64),
      v128.load(PART, 80),
    );
    let h = i32x4.splat(load<u16>(w, 208));
    h = i32x4.replace_lane(h, 1, load<u16>(w + wr, 208));
    h = i32x4.replace_lane(h, 2, load<u16>(w + 2 * wr, 208));
    h = i32x4.replace_lane(h, 3, load<u16>(w + 3 * wr, 208));
    const dd = f32x4.mul(h2f4(h), f32x4.splat(load<f32>(a)));
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
 * Q4_K rows w, w + wr, w + 2 wr, w + 3 wr against the Q8_K activation row a into o .. o + 12.
 * Per block the four rows' first 16 bytes (d, dmin and the 12 scale bytes) are transposed into
 * one 32-bit word per row per lane, so q4kScaleBytes' bit steps run once for the four rows:
 * the scales go to PART as int16 (row r, sub-block g at PART + 16 r + 2 g) for the chunk loop,
 * and the mins term m = sum_g mn_g * (bsum_2g + bsum_2g+1) is two i32x4.dot_i16x8_s per four
 * sub-blocks against the pair sums (|pair| <= 2 * 16 * 127, exact in int16). Then lane r:
 * acc + (d * d_x) * f32(s), then - (dmin * d_x) * f32(m), as dotQ4_Kr.
 */
export function dotQ4_Kr4(w: usize, wr: usize, a: usize, n: i32, o: usize): void {
  let acc = f32x4.splat(0);
  for (let b = 0; b < n >> 8; b++, w += 144, a += 292) {
    const r0 = v128.load(w);
    const r1 = v128.load(w + wr);
    const r2 = v128.load(w + 2 * wr);
    const r3 = v128.load(w + 3 * wr);
    const l01 = v128.shuffle<i32>(r0, r1, 0, 4, 1, 5);
    const l23 = v128.shuffle<i32>(r2, r3, 0, 4, 1, 5);
    const h01 = v128.shuffle<i32>(r0, r1, 2, 6, 3, 7);
    const h23 = v128.shuffle<i32>(r2, r3, 2, 6, 3, 7);
    const dh = v128.shuffle<i64>(l01, l23, 0, 2); // d | dmin << 16, lane r row r
    const u0 = v128.shuffle<i64>(l01, l23, 1, 3);
    const u1 = v128.shuffle<i64>(h01, h23, 0, 2);
    const u2 = v128.shuffle<i64>(h01, h23, 1, 3);
    const m3f = v128.load(K4);
    const m03 = v128.load(K4, 16);
    const m0f = v128.load(M + NIB8);
    const sc03 = v128.and(u0, m3f);
    const sc47 = v128.or(v128.and(u2, m0f), i32x4.shl(v128.and(i32x4.shr_u(u0, 6), m03), 4));
    const mn03 = v128.and(u1, m3f);
    const mn47 = v128.or(
      v128.and(i32x4.shr_u(u2, 4), m0f),
      i32x4.shl(v128.and(i32x4.shr_u(u1, 6), m03), 4),
    );
    // scales of rows 0, 1 then rows 2, 3 as bytes (sub-blocks 0..7 each), widened to int16
    const s01 = v128.shuffle<u8>(
      sc03,
      sc47,
      0,
      1,
      2,
      3,
      16,
      17,
      18,
      19,
      4,
      5,
      6,
      7,
      20,
      21,
      22,
      23,
    );
    const s23 = v128.shuffle<u8>(
      sc03,
      sc47,
      8,
      9,
      10,
      11,
      24,
      25,
      26,
      27,
      12,
      13,
      14,
      15,
      28,
      29,
      30,
      31,
    );
    v128.store(PART, i16x8.extend_low_i8x16_u(s01));
    v128.store(PART, i16x8.extend_high_i8x16_u(s01), 16);
    v128.store(PART, i16x8.extend_low_i8x16_u(s23), 32);
    v128.store(PART, i16x8.extend_high_i8x16_u(s23), 48);
    const p03 = i32x4.extadd_pairwise_i16x8_s(v128.load(a, 260));
    const p47 = i32x4.extadd_pairwise_i16x8_s(v128.load(a, 276));
    const pp03 = i16x8.narrow_i32x4_s(p03, p03);
    const pp47 = i16x8.narrow_i32x4_s(p47, p47);
    // lanes: rows 0, 0, 1, 1 (low) and 2, 2, 3, 3 (high), each two sub-blocks' mins terms
    const lo = i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(mn03), pp03),
      i32x4.dot_i16x8_s(i16x8.extend_low_i8x16_u(mn47), pp47),
    );
    const hi = i32x4.add(
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(mn03), pp03),
      i32x4.dot_i16x8_s(i16x8.extend_high_i8x16_u(mn47), pp47),
    );
    // kept in memory over the chunk loop, whose registers they would otherwise take
    v128.store(
      PART,
      i32x4.add(v128.shuffle<i32>(lo, hi, 0, 2, 4, 6), v128.shuffle<i32>(lo, hi, 1, 3, 5, 7)),
      64,
    );
    const dx = f32x4.splat(load<f32>(a));
    v128.store(PART, f32x4.mul(h2f4(dh), dx), 80); // h2f4 reads the low 16 bits of each lane
    v128.store(PART, f32x4.mul(h2f4(i32x4.shr_u(dh, 16)), dx), 96);
    let t0 = i32x4.splat(0);
    let t1 = i32x4.splat(0);
    let t2 = i32x4.splat(0);
    let t3 = i32x4.splat(0);
    for (let c: usize = 0; c < 4; c++) {
      const q = w + 16 + (c << 5);
      const x = a + 4 + (c << 6);
      const s = PART + (c << 2);
      t0 = q4kChunk(q, x, s, t0);
      t1 = q4kChunk(q + wr, x, s + 16, t1);
      t2 = q4kChunk(q + 2 * wr, x, s + 32, t2);
      t3 = q4kChunk(q + 3 * wr, x, s + 48, t3);
    }
    const sum = isum4(t0, t1, t2, t3);
    acc = f32x4.add(acc, f32x4.mul(v128.load(PART, 80), f32x4.convert_i32x4_s(sum)));
    acc = f32x4.sub(
      acc,
      f32x4.mul(v128.load(PART, 96), f32x4.convert_i32x4_s(v128.load(PART, 64))),
    );
  }
  v128.store(o, acc);
}
