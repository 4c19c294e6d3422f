/**
 * Four Q8_0 or Q4_0 weight rows per call for wasm/quant-matvec.ts's matvecQ (one activation row,
 * widened once; the plain build's: the relaxed one has wasm/quant-relaxed-rows4.ts's), one from
 * each quarter of the matrix, their blocks read in turn: four streams, each in address order,
 * which the prefetcher follows (1.06-1.16x the four adjacent rows of wasm/quant-relaxed-rows4.ts's
 * two phases here; four adjacent rows read in turn ran at 0.3x from memory). The float steps of
 * dotQ8w in lanes (lane r: row r, the same rounded operations in the same order).
 */

import { h2f4at, isum4, storeLanes } from "./quant-dot";
import { block4, block8 } from "./quant-matvec";

/**
 * Rows w, w + rs, w + 2 rs, w + 3 rs of Q8_0 (q4 false) or Q4_0 weights against the activation
 * row widened at x (widenRow: n int16, then the n / 32 d_x and the n / 32 sums of q) into o,
 * o + os, o + 2 os, o + 3 os: per block the four rows' sums by one isum4 (Q4_0: less 8 * sum(q)),
 * their d_w by one h2f4, then lane r: acc + f32(s) * (d_w * d_x), as dotQ8w.
 */
export function dotQ8w4(
  q4: bool,
  w: usize,
  rs: usize,
  x: usize,
  n: i32,
  o: usize,
  os: usize,
): void {
  const bw: usize = q4 ? 18 : 34;
  const nb = <usize>(n >> 5);
  const dxs = x + ((<usize>n) << 1);
  const sums = dxs + (nb << 2);
  let acc = f32x4.splat(0);
  for (let b: usize = 0; b < nb; b++, w += bw, x += 64) {
    let s: v128;
    if (q4) {
      s = isum4(block4(w, x), block4(w + rs, x), block4(w + 2 * rs, x), block4(w + 3 * rs, x));
      s = i32x4.sub(s, i32x4.shl(v128.load32_splat(sums + (b << 2)), 3));
    } else s = isum4(block8(w, x), block8(w + rs, x), block8(w + 2 * rs, x), block8(w + 3 * rs, x));
    const dd = f32x4.mul(h2f4at(w, rs), v128.load32_splat(dxs + (b << 2)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  storeLanes(o, os, acc);
}
