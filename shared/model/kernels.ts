/**
 * The kernel interface: the few hot loops of the model maths, behind one seam so that a host can
 * inject a faster implementation (WebAssembly SIMD) while shared/ stays pure.
 *
 * Memory: every buffer a kernel touches must come from the same `Kernels` object's `alloc*`
 * (the wasm implementation can only address its own linear memory). The arena has a fixed
 * capacity, which is how an NPU enforces its memory budget: `alloc*` throws `KernelMemoryError`
 * when the budget is exhausted (callers check `canAlloc` first where running out is expected).
 *
 * Determinism: each output element is reduced in a fixed order that depends only on its own
 * inputs, never on `m`, on the other rows, or on alignment, so a sequence's results do not depend
 * on which other sequences share its batch. The js (kernels-js.ts) and wasm (kernels-wasm.ts)
 * implementations perform the same f32 operations in the same order, so their results are
 * bit-identical: the choice of kernels never changes a generated token.
 *
 * Arguments may be subarray views of `alloc*` buffers at any element offset. Shapes, lengths,
 * block ids and aliasing are checked on every call (InvariantError: a bug in the caller).
 */

import type { WeightType } from "./quant.ts";

export class KernelMemoryError extends Error {
  override name = "KernelMemoryError";
}

export interface Kernels {
  /** "js" or "wasm". */
  readonly name: string;
  /** Bytes handed out so far, and the fixed capacity of the arena. */
  readonly usedBytes: number;
  readonly capacityBytes: number;
  /** True when `numBytes` more bytes fit in the arena (allocations are 16-byte aligned). */
  canAlloc(numBytes: number): boolean;
  /** `n` zeroed floats in kernel memory. @throws KernelMemoryError when over capacity. */
  alloc(n: number): Float32Array;
  /** `n` zeroed int32s in kernel memory. @throws KernelMemoryError when over capacity. */
  allocInt32(n: number): Int32Array;
  /** `n` zeroed bytes in kernel memory. @throws KernelMemoryError when over capacity. */
  allocBytes(n: number): Uint8Array;

  /**
   * X (m, n) @ W^T (d, n) -> out (m, d). Row-major. `out` must not alias `x` or `w`.
   * out[i, j] = sum_k x[i, k] * w[j, k], reduced in a fixed order per (i, j).
   */
  matmul(
    out: Float32Array,
    x: Float32Array,
    w: Float32Array,
    m: number,
    n: number,
    d: number,
  ): void;

  /**
   * The type these kernels keep a matrix of GGUF type `type` in: `type` itself, except that the
   * relaxed-SIMD wasm build keeps Q6_K as Q6_K_LANES (the same bytes permuted: shared/model/
   * quant.ts). matmulQ takes every type either returns.
   */
  residentType(type: WeightType): WeightType;

  /**
   * Rewrites `data` (whole rows of GGUF type `type`, in kernel memory) in place into the layout of
   * residentType(type), which it then has; nothing where that is `type` (loadWeights calls it on
   * every matrix it fills). The wasm build's Q6_K_LANES packing is tested bit for bit against a
   * plain-loop packer of the layout quant.ts documents.
   */
  toResident(type: WeightType, data: Uint8Array): void;

  /**
   * X (m, n) @ W^T (d, n) with W in a ggml block format (F16, Q8_0, Q4_0, Q4_K, Q6_K, and
   * Q6_K_LANES where residentType gives it; F32 weights use `matmul`): d rows of
   * `rowBytes(type, n)` bytes. out[i * ldo + j] = dot(x row i, w row j) for i < m, j < d; other
   * elements of `out` are left alone. The x rows are first quantised into `scratch` (m rows of
   * `actRowBytes(type, n)`), then each dot product is an integer sum per block and f32 operations
   * in the fixed order of kernels-quant-js.ts. `out` must not alias `x`, `w` or `scratch`, nor
   * `scratch` alias `x` or `w`.
   */
  matmulQ(
    out: Float32Array,
    ldo: number,
    x: Float32Array,
    w: Uint8Array,
    type: WeightType,
    m: number,
    n: number,
    d: number,
    scratch: Uint8Array,
  ): void;

  /**
   * SwiGLU of m fused rows gu (m, 2 * ff) = [gate | up] into out (m, ff). `out` must not alias
   * `gu`. out[r, i] = silu(g) * u, g = gu[r, i], u = gu[r, ff + i], each step one rounded f32
   * operation: e = expf(-g) (the kernels' exp: 0 below -87, +Infinity above 88), d = 1 + e,
   * s = g / d, out = s * u.
   */
  swiglu(out: Float32Array, gu: Float32Array, m: number, ff: number): void;

  /**
   * Causal attention of one query token over `numKeys` cached positions of a paged KV cache.
   *   q, out: (numHeads * headDim)
   *   kCache, vCache: (numBlocks * blockSize, numKvHeads * headDim) for one layer
   *   blockTable: block ids; position t lives at row blockTable[t / blockSize] * blockSize + t % blockSize
   *   scores: scratch of at least numKeys floats
   * Query head h reads KV head floor(h / (numHeads / numKvHeads)) (grouped-query attention).
   * Scores are scaled by 1/sqrt(headDim); softmax subtracts the max; positions are visited in order.
   * Requires numKeys >= 1 and numHeads % numKvHeads == 0. `out` may be `q` itself (in place); no
   * other overlap between out/scores and the other arguments is allowed. Block ids must lie inside
   * kCache and vCache.
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array,
    vCache: Float32Array,
    blockTable: Int32Array,
    numKeys: number,
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    blockSize: number,
    scores: Float32Array,
  ): void;
}
