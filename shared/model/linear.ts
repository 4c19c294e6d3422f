/**
 * Applies weight matrices to activation rows through the kernels: F32 matrices with `matmul`,
 * the others with `matmulQ`, a row-stacked `Linear` part by part into its columns of `out`. Pure.
 *
 * Batch-invariance holds across the dispatch: an F32 part beside other parts runs one `matmul`
 * per row, which gives the same bits as a batched one (kernels.ts).
 */
import { GgmlType } from "../gguf/gguf.ts";
import type { Kernels } from "./kernels.ts";
import type { Linear, Matrix } from "./weights.ts";

/** out (m, total rows of W) = x (m, n) @ W^T. `scratch` holds m quantised rows of n values. */
export function applyLinear(
  K: Kernels,
  out: Float32Array,
  x: Float32Array,
  W: Linear | Matrix,
  m: number,
  n: number,
  scratch: Uint8Array,
): void {
  const parts: Linear = Array.isArray(W) ? W : [W as Matrix];
  let d = 0;
  for (const p of parts) d += p.rows;
  let col = 0;
  for (const p of parts) {
    if (p.type === GgmlType.F32) {
      if (parts.length === 1) K.matmul(out, x, p.data, m, n, d);
      else {
        for (let i = 0; i < m; i++) {
          const o = i * d + col;
          K.matmul(
            out.subarray(o, o + p.rows),
            x.subarray(i * n, (i + 1) * n),
            p.data,
            1,
            n,
            p.rows,
          );
        }
      }
    } else {
      K.matmulQ(col === 0 ? out : out.subarray(col), d, x, p.data, p.type, m, n, p.rows, scratch);
    }
    col += p.rows;
  }
}
