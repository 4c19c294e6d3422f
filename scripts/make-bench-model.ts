/**
 * Writes the benchmark checkpoint for `bench:engine --vs-llama-cpp`: a dense llama-architecture
 * F32 GGUF of tens of millions of parameters, seeded Gaussian weights, with the tokenizer
 * metadata (every `tokenizer.*` key) copied from a real vocab GGUF. Never committed: it goes to
 * `--out` (default .tmp/bench-llama.gguf).
 *
 *   npm run -s build:bench-model -- [--out PATH] [--vocab GGUF] [--dim 512] [--layers 8]
 *     [--ff 1536] [--heads 8] [--kv-heads 4] [--ctx 512] [--seed 1] [--untied]
 *
 * The default vocab is ../shared/models/vocab/ggml-vocab-gpt-2.gguf (byte-level BPE, 50,257
 * tokens). With that many tokens the embedding is as large as all eight layers together, so the
 * output projection is tied to the token embedding (no `output.weight`, as llama.cpp and the
 * engine both allow): a decode step then streams every matrix once, and the layers are about
 * half of those bytes. Every matrix row length (dim, ff, q and kv widths) must be a multiple of
 * 256 so that each K-quant block type applies to every tensor.
 *
 * Scale: projections into the residual stream (attn_output, ffn_down) are drawn with standard
 * deviation 1 / sqrt(fan_in * 2 * layers), the others 1 / sqrt(fan_in), the embedding 1, norms
 * 1, so the residual stays O(1) through the layers and logits stay finite in F16 and Q4.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  GgmlType,
  type GgufMetadataEntry,
  type GgufTensorInput,
  GgufType,
  type GgufTypeId,
  parseGguf,
  writeGguf,
} from "../shared/gguf/gguf.ts";
import { gaussian, mulberry32 } from "../shared/random.ts";
import { llamaShapeEntries, str, u32 } from "./gguf-entries.ts";

export const DEFAULT_BENCH_MODEL_PATH = ".tmp/bench-llama.gguf";
export const DEFAULT_BENCH_VOCAB = "../shared/models/vocab/ggml-vocab-gpt-2.gguf";

export interface BenchModelDims {
  dim: number;
  layers: number;
  ff: number;
  heads: number;
  kvHeads: number;
  ctx: number;
  seed: number;
  tied: boolean;
}

export const DEFAULT_BENCH_DIMS: BenchModelDims = {
  dim: 512,
  layers: 8,
  ff: 1536,
  heads: 8,
  kvHeads: 4,
  ctx: 512,
  seed: 1,
  tied: true,
};

/** The `tokenizer.*` entries of a vocab GGUF, with their types, ready to write. */
export function tokenizerMetadata(vocab: Uint8Array): {
  entries: GgufMetadataEntry[];
  vocabSize: number;
} {
  const file = parseGguf(vocab, { headerOnly: true });
  const entries: GgufMetadataEntry[] = [];
  for (const [key, value] of file.metadata) {
    if (!key.startsWith("tokenizer.")) continue;
    const type = file.metadataTypes.get(key);
    if (type === undefined) throw new Error(`vocab: no type for ${key}`);
    if (type === GgufType.ARRAY) {
      if (!Array.isArray(value)) throw new Error(`vocab: ${key} is not an array`);
      entries.push({ key, type, itemType: arrayItemType(key, value), value });
    } else {
      entries.push({ key, type, value });
    }
  }
  const tokens = file.metadata.get("tokenizer.ggml.tokens");
  if (!Array.isArray(tokens) || tokens.length === 0) throw new Error("vocab has no tokens");
  return { entries, vocabSize: tokens.length };
}

/** The reader keeps no item type for arrays; the tokenizer arrays have fixed ones (llama.cpp's). */
function arrayItemType(key: string, value: unknown[]): Exclude<GgufTypeId, 9> {
  if (key === "tokenizer.ggml.scores") return GgufType.FLOAT32;
  if (key === "tokenizer.ggml.token_type") return GgufType.INT32;
  if (value.every((v) => typeof v === "string")) return GgufType.STRING;
  throw new Error(`vocab: cannot tell the item type of ${key}`);
}

export function checkDims(d: BenchModelDims): void {
  const headDim = d.dim / d.heads;
  const widths: [string, number][] = [
    ["dim", d.dim],
    ["ff", d.ff],
    ["kv width (kv-heads * head dim)", d.kvHeads * headDim],
  ];
  for (const [name, v] of widths) {
    if (!Number.isInteger(v) || v <= 0 || v % 256 !== 0)
      throw new Error(`${name} must be a positive multiple of 256 (K-quant blocks), got ${v}`);
  }
  if (d.heads % d.kvHeads !== 0) throw new Error("heads must be a multiple of kv-heads");
  if (d.layers < 1 || d.ctx < 2) throw new Error("need at least one layer and a context of 2");
}

export function buildBenchModel(vocab: Uint8Array, d: BenchModelDims): Uint8Array {
  checkDims(d);
  const { entries, vocabSize } = tokenizerMetadata(vocab);
  const headDim = d.dim / d.heads;
  const kvDim = d.kvHeads * headDim;
  const normal = gaussian(mulberry32(d.seed));
  const tensors: GgufTensorInput[] = [];
  /** ggml dims [rowLength, rows]; std from the fan-in (the row length). */
  const matrix = (name: string, rowLength: number, rows: number, std: number) => {
    const data = new Float32Array(rowLength * rows);
    for (let i = 0; i < data.length; i++) data[i] = normal() * std;
    tensors.push({ name, dims: [rowLength, rows], type: GgmlType.F32, data });
  };
  const ones = (name: string, n: number) =>
    tensors.push({ name, dims: [n], type: GgmlType.F32, data: new Float32Array(n).fill(1) });
  const inStd = (fanIn: number) => 1 / Math.sqrt(fanIn);
  const outStd = (fanIn: number) => 1 / Math.sqrt(fanIn * 2 * d.layers);

  matrix("token_embd.weight", d.dim, vocabSize, 1);
  ones("output_norm.weight", d.dim);
  if (!d.tied) matrix("output.weight", d.dim, vocabSize, inStd(d.dim));
  for (let l = 0; l < d.layers; l++) {
    const p = `blk.${l}.`;
    ones(`${p}attn_norm.weight`, d.dim);
    matrix(`${p}attn_q.weight`, d.dim, d.dim, inStd(d.dim));
    matrix(`${p}attn_k.weight`, d.dim, kvDim, inStd(d.dim));
    matrix(`${p}attn_v.weight`, d.dim, kvDim, inStd(d.dim));
    matrix(`${p}attn_output.weight`, d.dim, d.dim, outStd(d.dim));
    ones(`${p}ffn_norm.weight`, d.dim);
    matrix(`${p}ffn_gate.weight`, d.dim, d.ff, inStd(d.dim));
    matrix(`${p}ffn_up.weight`, d.dim, d.ff, inStd(d.dim));
    matrix(`${p}ffn_down.weight`, d.ff, d.dim, outStd(d.ff));
  }
  const metadata: GgufMetadataEntry[] = [
    str("general.architecture", "llama"),
    str("general.name", "bench-llama"),
    u32("general.file_type", 0), // all F32
    ...llamaShapeEntries({
      contextLength: d.ctx,
      dim: d.dim,
      layers: d.layers,
      ff: d.ff,
      heads: d.heads,
      kvHeads: d.kvHeads,
      headDim,
      ropeTheta: 10000,
      rmsNormEps: 1e-5,
    }),
    u32("llama.vocab_size", vocabSize),
    ...entries,
  ];
  return writeGguf(metadata, tensors);
}

/** Parameter count of the matrices and vectors `buildBenchModel` writes. */
export function benchModelParams(d: BenchModelDims, vocabSize: number): number {
  const kvDim = (d.kvHeads * d.dim) / d.heads;
  const layer = 2 * d.dim + 2 * d.dim * d.dim + 2 * d.dim * kvDim + 3 * d.dim * d.ff;
  return vocabSize * d.dim * (d.tied ? 1 : 2) + d.dim + d.layers * layer;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      out: { type: "string", default: DEFAULT_BENCH_MODEL_PATH },
      vocab: { type: "string", default: DEFAULT_BENCH_VOCAB },
      dim: { type: "string" },
      layers: { type: "string" },
      ff: { type: "string" },
      heads: { type: "string" },
      "kv-heads": { type: "string" },
      ctx: { type: "string" },
      seed: { type: "string" },
      untied: { type: "boolean", default: false },
    },
    strict: true,
  });
  const D = DEFAULT_BENCH_DIMS;
  const int = (v: string | undefined, dflt: number) => (v === undefined ? dflt : Number(v));
  const dims: BenchModelDims = {
    dim: int(values.dim, D.dim),
    layers: int(values.layers, D.layers),
    ff: int(values.ff, D.ff),
    heads: int(values.heads, D.heads),
    kvHeads: int(values["kv-heads"], D.kvHeads),
    ctx: int(values.ctx, D.ctx),
    seed: int(values.seed, D.seed),
    tied: !values.untied,
  };
  const vocab = new Uint8Array(readFileSync(values.vocab));
  const bytes = buildBenchModel(vocab, dims);
  const out = resolve(values.out);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, bytes);
  const params = benchModelParams(dims, tokenizerMetadata(vocab).vocabSize);
  console.log(
    `wrote ${values.out}: ${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB, ` +
      `${(params / 1e6).toFixed(1)} M parameters (${JSON.stringify(dims)}), vocab ${values.vocab}`,
  );
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main();
}
