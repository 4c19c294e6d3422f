/**
 * Four adjacent Q8_0 or Q4_0 weight rows per call for wasm/quant-matvec.ts's matvecQ (one
 * activation row, widened once; both builds: the relaxed one for Q8_0, whose weights take both
 * signs). As wasm/quant-relaxed-rows4.ts: the integer sums of each (row, block) row after row, so
 * that the weights are read in address order, stored as i32x4 partials (64 bytes a block); then
 * per block the four rows reduced by one isum4, their d_w converted by one h2f4 and the float
 * steps of dotQ8w in lanes (lane r: row r, the same rounded operations in the same order).
 */

import { h2f4at, isum4 } from "./quant-dot";
import { block4, block8 } from "./quant-matvec";

/**
 * Rows w, w + wr, w + 2 wr, w + 3 wr of Q8_0 (q4 false) or Q4_0 weights against the activation
 * row widened at x (widenRow: n int16, then the n / 32 d_x and the n / 32 sums of q) into
 * o .. o + 12, with 2n bytes of scratch at p.
 */
export function dotQ8w4(q4: bool, w: usize, wr: usize, x: usize, n: i32, o: usize, p: usize): void {
  const bw: usize = q4 ? 18 : 34;
  const nb = <usize>(n >> 5);
  const dxs = x + ((<usize>n) << 1);
  const sums = dxs + (nb << 2);
  for (let r: usize = 0, wj = w; r < 64; r += 16) {
    for (let xb = x, pb = p + r; xb < dxs; xb += 64, wj += bw, pb += 64) {
      v128.store(pb, q4 ? block4(wj, xb) : block8(wj, xb));
    }
  }
  let acc = f32x4.splat(0);
  for (let b: usize = 0; b < nb; b++, w += bw, p += 64) {
    let s = isum4(v128.load(p), v128.load(p, 16), v128.load(p, 32), v128.load(p, 48));
    if (q4) s = i32x4.sub(s, i32x4.shl(v128.load32_splat(sums + (b << 2)), 3));
    const dd = f32x4.mul(h2f4at(w, wr), v128.load32_splat(dxs + (b << 2)));
    acc = f32x4.add(acc, f32x4.mul(f32x4.convert_i32x4_s(s), dd));
  }
  v128.store(o, acc);
}
