/**
 * Weight layout in kernel memory. Tensors are dequantised to f32 and copied into the kernel arena
 * once, fused where one matmul can replace several (q|k|v rows, gate|up rows), so that a layer
 * costs few kernel calls. Pure; no I/O.
 */
import type { ModelConfig } from "./config.ts";
import { GgufError, type GgufFile, readTensorF32 } from "./gguf.ts";
import type { Kernels } from "./kernels.ts";

export interface LayerWeights {
  attnNorm: Float32Array; // (hiddenSize)
  /** q rows, then k rows, then v rows: (qDim + 2 kvDim, hiddenSize). */
  wqkv: Float32Array;
  wo: Float32Array; // (hiddenSize, qDim)
  qNorm: Float32Array | null; // (headDim), Qwen3
  kNorm: Float32Array | null; // (headDim)
  ffnNorm: Float32Array; // (hiddenSize)
  /**
   * Dense: gate rows then up rows (2 ff, hiddenSize). MoE: per expert e, the same at e * 2 ff;
   * empty when the experts live on expert ranks (`WeightSelection` "attention").
   */
  wGateUp: Float32Array;
  /** Dense: (hiddenSize, ff). MoE: per expert e, (hiddenSize, ff) at e * hiddenSize * ff. */
  wDown: Float32Array;
  /** MoE router (numExperts, hiddenSize), or null for a dense layer. */
  wRouter: Float32Array | null;
}

export interface ModelWeights {
  tokenEmbd: Float32Array; // (vocabSize, hiddenSize)
  outputNorm: Float32Array; // (hiddenSize)
  output: Float32Array; // (vocabSize, hiddenSize); the embedding when tied
  layers: LayerWeights[];
}

function tensorDims(file: GgufFile, name: string): number[] {
  const t = file.tensors.get(name);
  if (!t) throw new GgufError(`missing tensor ${name}`);
  return t.dims;
}

function expectDims(file: GgufFile, name: string, dims: number[]): void {
  const got = tensorDims(file, name);
  if (got.length !== dims.length || got.some((d, i) => d !== dims[i])) {
    throw new GgufError(`tensor ${name} has shape [${got}], expected [${dims}]`);
  }
}

/**
 * Which tensors a rank loads: "all" (colocated), or "attention" (everything but the MoE experts,
 * which live on expert ranks: see moe-split.ts and expert-shard.ts).
 */
export type WeightSelection = "all" | "attention";

/** f32 bytes the weights take in kernel memory (for budgets: check before loading). */
export function weightBytes(c: ModelConfig, selection: WeightSelection = "all"): number {
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const ff = c.numExperts > 0 ? c.moeIntermediateSize : c.intermediateSize;
  const nFfn = selection === "attention" && c.numExperts > 0 ? 0 : Math.max(c.numExperts, 1);
  const perLayer =
    2 * c.hiddenSize +
    (qDim + 2 * kvDim) * c.hiddenSize +
    c.hiddenSize * qDim +
    (c.hasQkNorm ? 2 * c.headDim : 0) +
    nFfn * 3 * ff * c.hiddenSize +
    c.numExperts * c.hiddenSize;
  const embed = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
  // each allocation is rounded to 16 bytes: allow for it
  return 4 * (c.numHiddenLayers * perLayer + embed) + 16 * (12 * c.numHiddenLayers + 3);
}

/** Copies the GGUF's tensors into `kernels` memory. @throws GgufError on missing or misshapen tensors. */
export function loadWeights(
  file: GgufFile,
  bytes: Uint8Array,
  c: ModelConfig,
  kernels: Kernels,
  selection: WeightSelection = "all",
): ModelWeights {
  const h = c.hiddenSize;
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const load = (name: string, dims: number[]): Float32Array => {
    expectDims(file, name, dims);
    return readTensorF32(file, bytes, name, kernels.alloc(dims.reduce((a, b) => a * b, 1)));
  };
  /** Reads several tensors back to back into one buffer. */
  const loadConcat = (parts: { name: string; dims: number[] }[]): Float32Array => {
    const sizes = parts.map((p) => p.dims.reduce((a, b) => a * b, 1));
    const out = kernels.alloc(sizes.reduce((a, b) => a + b, 0));
    let off = 0;
    parts.forEach((p, i) => {
      expectDims(file, p.name, p.dims);
      const n = sizes[i] as number;
      readTensorF32(file, bytes, p.name, out.subarray(off, off + n));
      off += n;
    });
    return out;
  };

  const tokenEmbd = load("token_embd.weight", [h, c.vocabSize]);
  const outputNorm = load("output_norm.weight", [h]);
  const output = c.tieWordEmbeddings ? tokenEmbd : load("output.weight", [h, c.vocabSize]);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `blk.${l}.`;
    const attnNorm = load(`${p}attn_norm.weight`, [h]);
    const wqkv = loadConcat([
      { name: `${p}attn_q.weight`, dims: [h, qDim] },
      { name: `${p}attn_k.weight`, dims: [h, kvDim] },
      { name: `${p}attn_v.weight`, dims: [h, kvDim] },
    ]);
    const wo = load(`${p}attn_output.weight`, [qDim, h]);
    const qNorm = c.hasQkNorm ? load(`${p}attn_q_norm.weight`, [c.headDim]) : null;
    const kNorm = c.hasQkNorm ? load(`${p}attn_k_norm.weight`, [c.headDim]) : null;
    const ffnNorm = load(`${p}ffn_norm.weight`, [h]);
    let wGateUp: Float32Array;
    let wDown: Float32Array;
    let wRouter: Float32Array | null = null;
    if (c.numExperts > 0 && selection === "attention") {
      wRouter = load(`${p}ffn_gate_inp.weight`, [h, c.numExperts]);
      wGateUp = new Float32Array(0);
      wDown = new Float32Array(0);
    } else if (c.numExperts > 0) {
      const ff = c.moeIntermediateSize;
      const e = c.numExperts;
      wRouter = load(`${p}ffn_gate_inp.weight`, [h, e]);
      const gate = tensorOrThrow(file, bytes, `${p}ffn_gate_exps.weight`, [h, ff, e]);
      const up = tensorOrThrow(file, bytes, `${p}ffn_up_exps.weight`, [h, ff, e]);
      wGateUp = kernels.alloc(e * 2 * ff * h);
      for (let x = 0; x < e; x++) {
        wGateUp.set(gate.subarray(x * ff * h, (x + 1) * ff * h), x * 2 * ff * h);
        wGateUp.set(up.subarray(x * ff * h, (x + 1) * ff * h), (x * 2 + 1) * ff * h);
      }
      wDown = load(`${p}ffn_down_exps.weight`, [ff, h, e]);
    } else {
      const ff = c.intermediateSize;
      wGateUp = loadConcat([
        { name: `${p}ffn_gate.weight`, dims: [h, ff] },
        { name: `${p}ffn_up.weight`, dims: [h, ff] },
      ]);
      wDown = load(`${p}ffn_down.weight`, [ff, h]);
    }
    layers.push({ attnNorm, wqkv, wo, qNorm, kNorm, ffnNorm, wGateUp, wDown, wRouter });
  }
  return { tokenEmbd, outputNorm, output, layers };
}

function tensorOrThrow(
  file: GgufFile,
  bytes: Uint8Array,
  name: string,
  dims: number[],
): Float32Array {
  expectDims(file, name, dims);
  return readTensorF32(file, bytes, name);
}
