/**
 * WebAssembly SIMD kernels adapter: wraps an instance of wasm/kernels.wasm or of its relaxed-SIMD
 * build wasm/kernels-relaxed.wasm (both from wasm/kernels.ts) as a `Kernels` object. Owns the
 * arena inside the instance's linear memory and the JS -> wasm call path.
 *
 * The host picks the build (`wasmBuild`) and instantiates it (shared/ has no `WebAssembly`):
 *   workerd: durable-objects/kernels-module.ts's `kernelsModule`, then
 *            `createWasmKernels(await WebAssembly.instantiate(mod, WASM_KERNEL_IMPORTS), cap)`
 *   Node:    hosts/node-kernels.ts (`loadWasmKernels(cap)`).
 * One instance per `Kernels` object: the arena is the instance's memory.
 *
 * The memory is grown once, at creation, to hold the whole arena, so it never grows again and
 * typed-array views into it never detach. Results are bit-identical to kernels-js.ts.
 */

import { InvariantError } from "../assert.ts";
import { GGML_BLOCKS, GgmlType } from "../gguf/gguf.ts";
import { KernelMemoryError, type Kernels } from "./kernels.ts";
import {
  checkAttention,
  checkCount,
  checkMatmul,
  checkSwiglu,
  rangesOverlap,
  roundAllocBytes,
} from "./kernels-js.ts";
import { checkMatmulQ } from "./kernels-quant-js.ts";
import {
  actRowBytes,
  blockValues,
  isWeightType,
  Q6_K_LANES,
  rowBytes,
  type WeightType,
} from "./quant.ts";

/** Values per block of each quantised (non-F32) weight type, by ggml type id. */
const QUANT_BLOCK_VALUES: Readonly<Record<number, number>> = Object.fromEntries(
  Object.keys(GGML_BLOCKS)
    .map(Number)
    .filter((t) => isWeightType(t) && t !== GgmlType.F32)
    .map((t) => [t, blockValues(t as Exclude<WeightType, typeof GgmlType.F32>)]),
);

/**
 * Imports object to pass to `WebAssembly.instantiate` with wasm/kernels.wasm. The module imports
 * nothing today (no `env.abort`: it is built with --noAssert and allocates nothing); hosts pass
 * this anyway so that a future import needs no host change.
 */
export const WASM_KERNEL_IMPORTS: Readonly<Record<string, Record<string, never>>> = Object.freeze(
  {},
);

/** The builds of wasm/kernels.ts: kernels-relaxed.wasm (relaxed SIMD) and kernels.wasm; same bits. */
export type WasmBuild = "relaxed-simd" | "simd128";

/** A module returning i32x4.relaxed_dot_i8x16_i7x16_add_s of zeros: valid where relaxed SIMD is. */
const RELAXED_SIMD_PROBE = Uint8Array.from([
  ...[0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0], // header, () -> v128
  ...[10, 61, 1, 59, 0], // code section: one body of 59 bytes, no locals
  ...[0, 1, 2].flatMap(() => [253, 12, ...new Array<number>(16).fill(0)]), // 3 x v128.const 0
  ...[253, 147, 2, 11], // i32x4.relaxed_dot_i8x16_i7x16_add_s (0xfd 0x113), end
]);

/** relaxed-simd where the host's `WebAssembly.validate` accepts relaxed SIMD, else simd128. */
export function wasmBuild(validate: (bytes: Uint8Array<ArrayBuffer>) => boolean): WasmBuild {
  return validate(RELAXED_SIMD_PROBE) ? "relaxed-simd" : "simd128";
}

const PAGE_BYTES = 65536;
const MAX_PAGES = 65536;

/** The exports of wasm/kernels.wasm, described structurally (shared/ has no WebAssembly types). */
interface KernelExports {
  memory: { readonly buffer: ArrayBuffer; grow(deltaPages: number): number };
  heapBase(): number;
  // X (m, n) @ W^T (d, n) -> out (m, d); byte offsets
  matmul(out: number, x: number, w: number, m: number, n: number, d: number): void;
  swiglu(out: number, gu: number, m: number, ff: number): void;
  matmulQ(
    out: number,
    ldo: number,
    x: number,
    w: number,
    type: number,
    m: number,
    n: number,
    d: number,
    scratch: number,
  ): void;
  /** 1 where matmulQ takes Q6_K_LANES (absent from builds older than it, with packQ6kLanes). */
  q6kLanes?(): number;
  packQ6kLanes?(w: number, numBlocks: number): void;
  attention(
    out: number,
    q: number,
    kCache: number,
    vCache: number,
    blockTable: number,
    numKeys: number,
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    blockSize: number,
    scores: number,
  ): void;
}

/** Instances already wrapped: a second Kernels object on one memory would share its arena. */
const adopted = new WeakSet<object>();

function kernelExports(instance: { exports: unknown }): KernelExports {
  const ex = instance.exports as Partial<Record<keyof KernelExports, unknown>> | null;
  const memory = ex?.memory as { buffer?: unknown; grow?: unknown } | undefined;
  if (
    !ex ||
    typeof memory !== "object" ||
    typeof memory.grow !== "function" ||
    typeof ex.heapBase !== "function" ||
    typeof ex.matmul !== "function" ||
    typeof ex.swiglu !== "function" ||
    typeof ex.matmulQ !== "function" ||
    typeof ex.attention !== "function"
  ) {
    throw new InvariantError("createWasmKernels: not an instance of wasm/kernels.wasm");
  }
  return ex as KernelExports;
}

/**
 * Kernels backed by an instance of wasm/kernels.wasm, with an arena of `capacityBytes` in its
 * memory. @throws KernelMemoryError when the memory cannot grow to the capacity.
 */
export function createWasmKernels(instance: { exports: unknown }, capacityBytes: number): Kernels {
  checkCount(capacityBytes, "capacityBytes");
  const ex = kernelExports(instance);
  if (adopted.has(ex.memory)) {
    throw new InvariantError("createWasmKernels: this instance already backs a Kernels object");
  }
  adopted.add(ex.memory);

  const base = roundAllocBytes(ex.heapBase());
  const needPages = Math.ceil((base + capacityBytes) / PAGE_BYTES);
  if (needPages > MAX_PAGES) {
    throw new KernelMemoryError(`wasm kernel arena of ${capacityBytes} bytes exceeds 4 GiB`);
  }
  const havePages = ex.memory.buffer.byteLength / PAGE_BYTES;
  if (needPages > havePages) {
    try {
      ex.memory.grow(needPages - havePages);
    } catch (e) {
      throw new KernelMemoryError(
        `wasm kernel memory cannot grow to ${needPages} pages: ${(e as Error).message}`,
      );
    }
  }
  const buf = ex.memory.buffer;
  const wasmMatmul = ex.matmul;
  const wasmSwiglu = ex.swiglu;
  const wasmAttention = ex.attention;
  const wasmMatmulQ = ex.matmulQ;
  const lanes = typeof ex.q6kLanes === "function" && ex.q6kLanes() === 1;
  const blockValuesOf: Readonly<Record<number, number>> = lanes
    ? { ...QUANT_BLOCK_VALUES, [Q6_K_LANES]: blockValues(Q6_K_LANES) }
    : QUANT_BLOCK_VALUES;
  let used = 0;

  function reserve(n: number, what: string, elementBytes = 4): number {
    checkCount(n, `${what} length`);
    const bytes = roundAllocBytes(n * elementBytes);
    if (used + bytes > capacityBytes) {
      throw new KernelMemoryError(
        `kernel arena full: ${what}(${n}) needs ${bytes} bytes, ` +
          `${capacityBytes - used} of ${capacityBytes} left`,
      );
    }
    const ptr = base + used;
    used += bytes;
    return ptr;
  }

  function foreign(): never {
    throw new InvariantError("kernel argument does not live in this Kernels object's wasm memory");
  }

  return {
    name: "wasm",
    get usedBytes() {
      return used;
    },
    capacityBytes,
    canAlloc(numBytes: number): boolean {
      return numBytes >= 0 && used + roundAllocBytes(numBytes) <= capacityBytes;
    },
    alloc(n: number): Float32Array {
      // Fresh pages are zero and the arena never reuses memory, so no fill is needed.
      return new Float32Array(buf, reserve(n, "alloc"), n);
    },
    allocInt32(n: number): Int32Array {
      return new Int32Array(buf, reserve(n, "allocInt32"), n);
    },
    allocBytes(n: number): Uint8Array {
      return new Uint8Array(buf, reserve(n, "allocBytes", 1), n);
    },
    residentType: (type) => (lanes && type === GgmlType.Q6_K ? Q6_K_LANES : type),
    toResident(type, data): void {
      if (!lanes || type !== GgmlType.Q6_K) return;
      if (data.buffer !== buf) foreign();
      if (data.length % 210 !== 0) {
        throw new InvariantError(`toResident: ${data.length} bytes are not whole Q6_K blocks`);
      }
      (ex.packQ6kLanes as (w: number, numBlocks: number) => void)(
        data.byteOffset,
        data.length / 210,
      );
    },
    // Like matmul: each typed-array getter read once, checks on plain numbers; checkMatmulQ (the
    // authority) only runs to build the error when one fails.
    matmulQ(out, ldo, x, w, type, m, n, d, scratch): void {
      if (out.buffer !== buf || x.buffer !== buf || w.buffer !== buf || scratch.buffer !== buf) {
        foreign();
      }
      const po = out.byteOffset;
      const px = x.byteOffset;
      const pw = w.byteOffset;
      const ps = scratch.byteOffset;
      const qk = blockValuesOf[type] ?? 0;
      const ok = (m | 0) === m && (n | 0) === n && (d | 0) === d && (ldo | 0) === ldo;
      const ob = ok && m > 0 ? ((m - 1) * ldo + d) * 4 : 0;
      const wb = qk > 0 && n % qk === 0 ? d * rowBytes(type, n) : -1;
      const sb = wb >= 0 ? m * actRowBytes(type, n) : -1;
      if (
        !ok ||
        (m | n | d) < 0 ||
        ldo < d ||
        wb < 0 ||
        out.length * 4 < ob ||
        x.length < m * n ||
        w.length < wb ||
        scratch.length < sb ||
        rangesOverlap(po, ob, px, m * n * 4) ||
        rangesOverlap(po, ob, pw, wb) ||
        rangesOverlap(po, ob, ps, sb) ||
        rangesOverlap(ps, sb, px, m * n * 4) ||
        rangesOverlap(ps, sb, pw, wb)
      ) {
        checkMatmulQ(out, ldo, x, w, type, m, n, d, scratch);
        // checkMatmulQ accepts every resident type; this build may not take Q6_K_LANES
        if (wb < 0) throw new InvariantError(`matmulQ: this wasm build does not take type ${type}`);
      }
      wasmMatmulQ(po, ldo, px, pw, type, m, n, d, ps);
    },
    // X (m, n) @ W^T (d, n) -> out (m, d)
    // The hot path for small matvecs: typed-array getters (.buffer, .byteOffset) cost ~15-20 ns
    // each in V8, so each is read once; checkMatmul only runs to build the error.
    matmul(out, x, w, m, n, d): void {
      if (out.buffer !== buf || x.buffer !== buf || w.buffer !== buf) foreign();
      const po = out.byteOffset;
      const px = x.byteOffset;
      const pw = w.byteOffset;
      const ob = m * d * 4;
      const shapeOk =
        (m | 0) === m &&
        (n | 0) === n &&
        (d | 0) === d &&
        (m | n | d) >= 0 &&
        out.length >= m * d &&
        x.length >= m * n &&
        w.length >= d * n;
      if (
        !shapeOk ||
        rangesOverlap(po, ob, px, m * n * 4) ||
        rangesOverlap(po, ob, pw, d * n * 4)
      ) {
        checkMatmul(out, x, w, m, n, d);
      }
      wasmMatmul(po, px, pw, m, n, d);
    },
    // Once per layer and batch: checks on plain numbers as in matmul.
    swiglu(out, gu, m, ff): void {
      if (out.buffer !== buf || gu.buffer !== buf) foreign();
      const po = out.byteOffset;
      const pg = gu.byteOffset;
      const n = m * ff;
      const ok =
        (m | 0) === m &&
        (ff | 0) === ff &&
        (m | ff) >= 0 &&
        out.length >= n &&
        gu.length >= 2 * n &&
        !rangesOverlap(po, n * 4, pg, n * 8);
      if (!ok) checkSwiglu(out, gu, m, ff);
      wasmSwiglu(po, pg, m, ff);
    },
    // Once per layer and sequence: like matmul, each typed-array getter is read once and the
    // checks run on plain numbers; checkAttention (the authority) only runs when one fails.
    attention(
      out,
      q,
      kCache,
      vCache,
      table,
      numKeys,
      numHeads,
      numKvHeads,
      headDim,
      blockSize,
      scores,
    ) {
      if (
        out.buffer !== buf ||
        q.buffer !== buf ||
        kCache.buffer !== buf ||
        vCache.buffer !== buf ||
        table.buffer !== buf ||
        scores.buffer !== buf
      ) {
        foreign();
      }
      const po = out.byteOffset;
      const pq = q.byteOffset;
      const pk = kCache.byteOffset;
      const pv = vCache.byteOffset;
      const pt = table.byteOffset;
      const ps = scores.byteOffset;
      const kLen = kCache.length;
      const vLen = vCache.length;
      const qb = numHeads * headDim * 4;
      const numBlocks = Math.ceil(numKeys / blockSize);
      let ok =
        (numKeys | 0) === numKeys &&
        (numHeads | 0) === numHeads &&
        (numKvHeads | 0) === numKvHeads &&
        (headDim | 0) === headDim &&
        (blockSize | 0) === blockSize &&
        numKeys >= 1 &&
        numHeads >= 1 &&
        numKvHeads >= 1 &&
        headDim >= 1 &&
        blockSize >= 1 &&
        numHeads % numKvHeads === 0 &&
        q.length * 4 >= qb &&
        out.length * 4 >= qb &&
        scores.length >= numKeys &&
        table.length >= numBlocks &&
        !rangesOverlap(po, qb, pk, kLen * 4) &&
        !rangesOverlap(po, qb, pv, vLen * 4) &&
        !rangesOverlap(po, qb, pt, numBlocks * 4) &&
        (out === q || !rangesOverlap(po, qb, pq, qb)) &&
        !rangesOverlap(ps, numKeys * 4, pk, kLen * 4) &&
        !rangesOverlap(ps, numKeys * 4, pv, vLen * 4) &&
        !rangesOverlap(ps, numKeys * 4, pt, numBlocks * 4) &&
        !rangesOverlap(ps, numKeys * 4, pq, qb) &&
        !rangesOverlap(po, qb, ps, numKeys * 4);
      if (ok) {
        const cacheBlocks = Math.floor(Math.min(kLen, vLen) / (blockSize * numKvHeads * headDim));
        for (let b = 0; b < numBlocks; b++) {
          const id = table[b] as number;
          if (!(id >= 0 && id < cacheBlocks)) ok = false;
        }
      }
      if (!ok) {
        checkAttention(
          out,
          q,
          kCache,
          vCache,
          table,
          numKeys,
          numHeads,
          numKvHeads,
          headDim,
          blockSize,
          scores,
        );
      }
      wasmAttention(po, pq, pk, pv, pt, numKeys, numHeads, numKvHeads, headDim, blockSize, ps);
    },
  };
}
