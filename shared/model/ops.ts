/**
 * Small element-wise ops of the forward pass (O(n) per row, plain JS). The O(n^2) work lives in
 * kernels.ts. Pure; no allocation.
 */

/**
 * RMSNorm of x (n) into out (n): out = x / sqrt(mean(x^2) + eps) * w.
 * NOTE: the sum of squares is accumulated in float64 (as ggml does), eps inside the sqrt.
 */
export function rmsnorm(
  out: Float32Array,
  outOff: number,
  x: Float32Array,
  xOff: number,
  w: Float32Array,
  n: number,
  eps: number,
): void {
  let ss = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xOff + i] as number;
    ss += v * v;
  }
  const scale = Math.fround(1 / Math.sqrt(ss / n + eps));
  for (let i = 0; i < n; i++) out[outOff + i] = (x[xOff + i] as number) * scale * (w[i] as number);
}

/**
 * Precomputed RoPE table for positions [0, maxPos): cos/sin of pos * theta^(-2i/ropeDim),
 * (maxPos, ropeDim / 2) each, in float64.
 */
export interface RopeTable {
  cos: Float64Array;
  sin: Float64Array;
  half: number;
}

export function ropeTable(maxPos: number, ropeDim: number, theta: number): RopeTable {
  const half = ropeDim / 2;
  const cos = new Float64Array(maxPos * half);
  const sin = new Float64Array(maxPos * half);
  for (let i = 0; i < half; i++) {
    // ggml computes the per-pair frequency as freq_base^(-2i/n_dims) in float
    const freq = Math.fround(theta ** (-(2 * i) / ropeDim));
    for (let p = 0; p < maxPos; p++) {
      const a = p * freq;
      cos[p * half + i] = Math.cos(a);
      sin[p * half + i] = Math.sin(a);
    }
  }
  return { cos, sin, half };
}

/**
 * Rotates `numHeads` heads of width headDim starting at x[off], in place, at position pos.
 * "norm" rotates adjacent pairs (2i, 2i+1), "neox" rotates (i, i + half). Dims past ropeDim are kept.
 */
export function rope(
  x: Float32Array,
  off: number,
  numHeads: number,
  headDim: number,
  pos: number,
  table: RopeTable,
  neox: boolean,
): void {
  const half = table.half;
  const base = pos * half;
  for (let h = 0; h < numHeads; h++) {
    const o = off + h * headDim;
    for (let i = 0; i < half; i++) {
      const c = table.cos[base + i] as number;
      const s = table.sin[base + i] as number;
      const i0 = neox ? o + i : o + 2 * i;
      const i1 = neox ? o + i + half : i0 + 1;
      const x0 = x[i0] as number;
      const x1 = x[i1] as number;
      x[i0] = x0 * c - x1 * s;
      x[i1] = x0 * s + x1 * c;
    }
  }
}

/** In-place softmax of x[off, off + n), subtracting the max; sum in float64. */
export function softmax(x: Float32Array, off: number, n: number): void {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) if ((x[off + i] as number) > max) max = x[off + i] as number;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((x[off + i] as number) - max);
    x[off + i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) x[off + i] = (x[off + i] as number) / sum;
}
