/**
 * Kernel benchmark: GFLOP/s of matmul and microseconds per attention and swiglu call, for the JS
 * and the wasm SIMD kernels (median of several timed runs after a warm-up); swiglu also for the
 * plain float64 Math.exp loop it replaced ("f64"); the quantised matmul (`matmulQ`) per weight
 * type on wasm, with the weight bytes streamed per second.
 *
 *   npx tsx bench/kernels.ts [--json]     (--json: the results as JSON on the last line)
 *   node --experimental-wasm-relaxed-simd --import tsx bench/kernels.ts --json   (relaxed build)
 */

import { createKernels, type KernelKind, WASM_BUILD } from "../hosts/node-kernels.ts";
import { GgmlType } from "../shared/gguf/gguf.ts";
import type { Kernels } from "../shared/model/kernels.ts";
import { actRowBytes, rowBytes, type WeightType } from "../shared/model/quant.ts";
import { mulberry32 } from "../shared/random.ts";
import { QUANTISED_TYPES, randomQuantWeights } from "../test/helpers/quant.ts";

const MATMUL_SHAPES: [number, number, number][] = [
  [1, 64, 64],
  [1, 64, 512],
  [32, 64, 172],
  [64, 256, 256],
];
// numHeads, numKvHeads, headDim, blockSize, numKeys
const ATTENTION_SHAPES: [number, number, number, number, number][] = [
  [8, 4, 8, 16, 130], // stories260K decode (mid-sequence)
  [6, 2, 16, 16, 130], // default model
  [4, 2, 16, 16, 130], // tiny-mixtral
  [8, 4, 32, 16, 130], // qwen3moe-like head dim
  [4, 4, 16, 16, 64],
  [4, 4, 16, 16, 512],
  [8, 2, 64, 16, 512],
];
// m, ff
const SWIGLU_SHAPES: [number, number][] = [
  [1, 172], // stories260K decode
  [32, 172],
  [32, 768],
];
// m, n, d of the quantised matmul (wasm only; F32 through matmul for comparison)
const QUANT_SHAPES: [number, number, number][] = [
  [1, 1024, 1024],
  [16, 1024, 1024],
];
const QUANT_TYPES = [["F32", GgmlType.F32], ...QUANTISED_TYPES] as const;
const RUNS = 7;
const RUN_SECONDS = 0.05;

function fill(a: Float32Array, rng: () => number): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = rng() * 2 - 1;
  return a;
}

/** Median seconds per call of `f`, with the repeat count sized to about RUN_SECONDS a run. */
function timePerCall(f: () => void): number {
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) f();
    const dt = (performance.now() - t0) / 1000;
    if (dt > RUN_SECONDS / 4) {
      reps = Math.max(1, Math.ceil((reps * RUN_SECONDS) / dt));
      break;
    }
    reps *= 2;
  }
  const times: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const t0 = performance.now();
    for (let r = 0; r < reps; r++) f();
    times.push((performance.now() - t0) / 1000 / reps);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(RUNS / 2)] as number;
}

interface MatmulResult {
  kernel: KernelKind;
  m: number;
  n: number;
  d: number;
  gflops: number;
  usPerCall: number;
}

interface AttentionResult {
  kernel: KernelKind;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  numKeys: number;
  usPerCall: number;
}

interface SwigluResult {
  kernel: KernelKind | "f64";
  m: number;
  ff: number;
  usPerCall: number;
}

/** The per-row float64 loop that shared/model/ops.ts ran before swiglu became a kernel. */
function swigluF64(out: Float32Array, gu: Float32Array, m: number, ff: number): void {
  for (let r = 0; r < m; r++) {
    for (let i = 0; i < ff; i++) {
      const g = gu[r * 2 * ff + i] as number;
      out[r * ff + i] = (g / (1 + Math.exp(-g))) * (gu[r * 2 * ff + ff + i] as number);
    }
  }
}

function benchSwiglu(k: Kernels, kind: KernelKind | "f64", m: number, ff: number): SwigluResult {
  const rng = mulberry32(m + ff);
  const gu = fill(k.alloc(m * 2 * ff), rng);
  for (let i = 0; i < gu.length; i++) gu[i] = (gu[i] as number) * 8; // gates in [-8, 8]
  const out = k.alloc(m * ff);
  const f = kind === "f64" ? () => swigluF64(out, gu, m, ff) : () => k.swiglu(out, gu, m, ff);
  return { kernel: kind, m, ff, usPerCall: timePerCall(f) * 1e6 };
}

function benchMatmul(k: Kernels, kind: KernelKind, m: number, n: number, d: number): MatmulResult {
  const rng = mulberry32(m * 1000 + n + d);
  const x = fill(k.alloc(m * n), rng);
  const w = fill(k.alloc(d * n), rng);
  const out = k.alloc(m * d);
  const s = timePerCall(() => k.matmul(out, x, w, m, n, d));
  return { kernel: kind, m, n, d, gflops: (2 * m * n * d) / s / 1e9, usPerCall: s * 1e6 };
}

interface MatmulQResult {
  type: string;
  m: number;
  n: number;
  d: number;
  gflops: number;
  weightGBps: number;
  usPerCall: number;
}

function benchMatmulQ(k: Kernels, name: string, type: WeightType, m: number, n: number, d: number) {
  const rng = mulberry32(m * 1000 + n + d + type);
  const x = fill(k.alloc(m * n), rng);
  const out = k.alloc(m * d);
  let s: number;
  if (type === GgmlType.F32) {
    const w = fill(k.alloc(d * n), rng);
    s = timePerCall(() => k.matmul(out, x, w, m, n, d));
  } else {
    const w = k.allocBytes(d * rowBytes(type, n));
    w.set(randomQuantWeights(type, n, d, rng));
    const scratch = k.allocBytes(m * actRowBytes(type, n));
    s = timePerCall(() => k.matmulQ(out, d, x, w, type, m, n, d, scratch));
  }
  const wBytes = d * rowBytes(type, n);
  return {
    type: name,
    m,
    n,
    d,
    gflops: (2 * m * n * d) / s / 1e9,
    weightGBps: wBytes / s / 1e9,
    usPerCall: s * 1e6,
  };
}

function benchAttention(
  k: Kernels,
  kind: KernelKind,
  [numHeads, numKvHeads, headDim, blockSize, numKeys]: [number, number, number, number, number],
): AttentionResult {
  const rng = mulberry32(numKeys);
  const numBlocks = Math.ceil(numKeys / blockSize);
  const row = numKvHeads * headDim;
  const kCache = fill(k.alloc(numBlocks * blockSize * row), rng);
  const vCache = fill(k.alloc(numBlocks * blockSize * row), rng);
  const table = k.allocInt32(numBlocks);
  for (let b = 0; b < numBlocks; b++) table[b] = numBlocks - 1 - b;
  const q = fill(k.alloc(numHeads * headDim), rng);
  const out = k.alloc(numHeads * headDim);
  const scores = k.alloc(numKeys);
  const s = timePerCall(() =>
    k.attention(
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
    ),
  );
  return { kernel: kind, numHeads, numKvHeads, headDim, numKeys, usPerCall: s * 1e6 };
}

async function main(): Promise<void> {
  const json = process.argv.includes("--json");
  const matmul: MatmulResult[] = [];
  const attention: AttentionResult[] = [];
  const swiglu: SwigluResult[] = [];
  const matmulQ: MatmulQResult[] = [];
  const wasm = await createKernels("wasm", 64 << 20);
  for (const [m, n, d] of QUANT_SHAPES) {
    for (const [name, type] of QUANT_TYPES) {
      const r = benchMatmulQ(wasm, name, type, m, n, d);
      matmulQ.push(r);
      console.log(
        `matmulQ   wasm ${name.padEnd(4)} ${`${m}x${n}x${d}`.padEnd(12)} ` +
          `${r.gflops.toFixed(2).padStart(7)} GFLOP/s ${r.weightGBps.toFixed(2).padStart(6)} GB/s ` +
          `${r.usPerCall.toFixed(1).padStart(9)} us/call`,
      );
    }
  }
  for (const kind of ["js", "wasm"] as const) {
    const k = await createKernels(kind, 64 << 20);
    for (const [m, n, d] of MATMUL_SHAPES) {
      const r = benchMatmul(k, kind, m, n, d);
      matmul.push(r);
      console.log(
        `matmul    ${kind.padEnd(4)} ${`${m}x${n}x${d}`.padEnd(10)} ` +
          `${r.gflops.toFixed(2).padStart(7)} GFLOP/s ${r.usPerCall.toFixed(2).padStart(9)} us/call`,
      );
    }
    for (const shape of ATTENTION_SHAPES) {
      const r = benchAttention(k, kind, shape);
      attention.push(r);
      console.log(
        `attention ${kind.padEnd(4)} h=${r.numHeads} kv=${r.numKvHeads} hd=${r.headDim} ` +
          `keys=${r.numKeys} ${r.usPerCall.toFixed(2).padStart(9)} us/call`,
      );
    }
    for (const [m, ff] of SWIGLU_SHAPES) {
      for (const which of kind === "js" ? (["f64", "js"] as const) : (["wasm"] as const)) {
        const r = benchSwiglu(k, which, m, ff);
        swiglu.push(r);
        console.log(
          `swiglu    ${which.padEnd(4)} m=${m} ff=${ff} ${r.usPerCall.toFixed(2).padStart(9)} us/call`,
        );
      }
    }
  }
  if (json) {
    const round = (v: number) => Math.round(v * 1000) / 1000;
    console.log(
      JSON.stringify({
        node: process.version,
        wasm: WASM_BUILD,
        matmul: matmul.map((r) => ({
          ...r,
          gflops: round(r.gflops),
          usPerCall: round(r.usPerCall),
        })),
        attention: attention.map((r) => ({ ...r, usPerCall: round(r.usPerCall) })),
        swiglu: swiglu.map((r) => ({ ...r, usPerCall: round(r.usPerCall) })),
        matmulQ: matmulQ.map((r) => ({
          ...r,
          gflops: round(r.gflops),
          weightGBps: round(r.weightGBps),
          usPerCall: round(r.usPerCall),
        })),
      }),
    );
  }
}

await main();
