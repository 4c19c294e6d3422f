/**
 * Weight layout in kernel memory. Matrices stay in their GGUF type (F16, Q8_0, Q4_0, Q4_K, Q6_K;
 * F32 as f32, BF16 widened to f32; the kernels' resident form: the relaxed wasm build's Q6_K as
 * Q6_K_LANES, the same bytes permuted) and are copied into the kernel arena once, fused where one
 * matmul can replace several (q|k|v rows, gate|up rows) and the parts share a type; parts of
 * different types stay side by side in one `Linear`. Norm vectors are f32. Pure; no I/O.
 */

import { GgmlType, GgufError, type GgufFile, type GgufTensorInfo } from "../gguf/gguf.ts";
import type { ModelConfig } from "./config.ts";
import type { Kernels } from "./kernels.ts";
import {
  dequantizeRow,
  type GgufWeightType,
  isWeightType,
  readTensorF32,
  rowBytes,
  type WeightType,
} from "./quant.ts";

/** One weight matrix (rows, cols) in kernel memory. */
export type Matrix =
  | { type: typeof GgmlType.F32; rows: number; cols: number; data: Float32Array }
  | {
      type: Exclude<WeightType, typeof GgmlType.F32>;
      rows: number;
      cols: number;
      data: Uint8Array;
    };

/** Row-stacked matrices multiplied by one input: their outputs side by side, in order. */
export type Linear = readonly Matrix[];

export interface LayerWeights {
  attnNorm: Float32Array; // (hiddenSize)
  /** q rows, then k rows, then v rows: (qDim + 2 kvDim, hiddenSize). */
  wqkv: Linear;
  wo: Linear; // (hiddenSize, qDim)
  qNorm: Float32Array | null; // (headDim), Qwen3
  kNorm: Float32Array | null; // (headDim)
  ffnNorm: Float32Array; // (hiddenSize)
  /**
   * Dense: gate rows then up rows (2 ff, hiddenSize). MoE: per expert e, the same at rows e * 2 ff;
   * no rows when the experts live on expert ranks (`WeightSelection` "attention").
   */
  wGateUp: Matrix;
  /** Dense: (hiddenSize, ff). MoE: per expert e, (hiddenSize, ff) at rows e * hiddenSize. */
  wDown: Matrix;
  /** MoE router (numExperts, hiddenSize), or null for a dense layer. */
  wRouter: Matrix | null;
}

export interface ModelWeights {
  tokenEmbd: Matrix; // (vocabSize, hiddenSize)
  outputNorm: Float32Array; // (hiddenSize)
  output: Matrix; // (vocabSize, hiddenSize); the embedding when tied
  layers: LayerWeights[];
}

/** Rows [first, first + count) of a matrix, as a view. */
export function matrixRows(m: Matrix, first: number, count: number): Matrix {
  if (m.type === GgmlType.F32) {
    const data = m.data.subarray(first * m.cols, (first + count) * m.cols);
    return { type: m.type, rows: count, cols: m.cols, data };
  }
  const rb = rowBytes(m.type, m.cols);
  return {
    type: m.type,
    rows: count,
    cols: m.cols,
    data: m.data.subarray(first * rb, (first + count) * rb),
  };
}

/** Row `row` of a matrix as f32 into out[o..o+cols) (the embedding lookup). */
export function readRow(m: Matrix, row: number, out: Float32Array, o: number): void {
  if (m.type === GgmlType.F32) out.set(m.data.subarray(row * m.cols, (row + 1) * m.cols), o);
  else dequantizeRow(m.type, m.data, row * rowBytes(m.type, m.cols), m.cols, out, o);
}

function tensorInfo(file: GgufFile, name: string, dims: number[]): GgufTensorInfo {
  const t = file.tensors.get(name);
  if (!t) throw new GgufError(`missing tensor ${name}`);
  if (t.dims.length !== dims.length || t.dims.some((d, i) => d !== dims[i])) {
    throw new GgufError(`tensor ${name} has shape [${t.dims}], expected [${dims}]`);
  }
  return t;
}

/** The type a tensor keeps in kernel memory (BF16 becomes F32). */
function arenaType(t: GgufTensorInfo): GgufWeightType {
  if (t.type === GgmlType.BF16) return GgmlType.F32;
  if (!isWeightType(t.type)) throw new GgufError(`tensor ${t.name}: unsupported type ${t.type}`);
  return t.type;
}

/** Bytes a tensor takes in kernel memory, with the 16-byte allocation granule. */
function arenaBytes(t: GgufTensorInfo, type: WeightType = arenaType(t)): number {
  const bytes = type === GgmlType.F32 ? 4 * t.numElements : t.numBytes;
  return Math.ceil(bytes / 16) * 16;
}

/**
 * Which tensors a rank loads: "all" (colocated), or "attention" (everything but the MoE experts,
 * which live on expert ranks: see moe-split.ts and expert-shard.ts).
 */
export type WeightSelection = "all" | "attention";

/** A matrix with no rows (the experts of an attention rank). */
function noRows(cols: number): Matrix {
  return { type: GgmlType.F32, rows: 0, cols, data: new Float32Array(0) };
}

interface TensorSpec {
  name: string;
  dims: number[];
}

/**
 * The tensors a model loads: vectors, matrices (stacks of parts), MoE expert pairs; with
 * "attention", no expert tensors (the router stays).
 */
function tensorPlan(
  c: ModelConfig,
  selection: WeightSelection = "all",
): { vectors: TensorSpec[]; stacks: TensorSpec[][] } {
  const h = c.hiddenSize;
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const vectors: TensorSpec[] = [{ name: "output_norm.weight", dims: [h] }];
  const stacks: TensorSpec[][] = [[{ name: "token_embd.weight", dims: [h, c.vocabSize] }]];
  if (!c.tieWordEmbeddings) stacks.push([{ name: "output.weight", dims: [h, c.vocabSize] }]);
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `blk.${l}.`;
    vectors.push(
      { name: `${p}attn_norm.weight`, dims: [h] },
      { name: `${p}ffn_norm.weight`, dims: [h] },
    );
    if (c.hasQkNorm) {
      vectors.push(
        { name: `${p}attn_q_norm.weight`, dims: [c.headDim] },
        { name: `${p}attn_k_norm.weight`, dims: [c.headDim] },
      );
    }
    stacks.push(
      [
        { name: `${p}attn_q.weight`, dims: [h, qDim] },
        { name: `${p}attn_k.weight`, dims: [h, kvDim] },
        { name: `${p}attn_v.weight`, dims: [h, kvDim] },
      ],
      [{ name: `${p}attn_output.weight`, dims: [qDim, h] }],
    );
    if (c.numExperts > 0) {
      const ff = c.moeIntermediateSize;
      const e = c.numExperts;
      stacks.push([{ name: `${p}ffn_gate_inp.weight`, dims: [h, e] }]);
      if (selection === "all") {
        stacks.push(
          [
            { name: `${p}ffn_gate_exps.weight`, dims: [h, ff, e] },
            { name: `${p}ffn_up_exps.weight`, dims: [h, ff, e] },
          ],
          [{ name: `${p}ffn_down_exps.weight`, dims: [ff, h, e] }],
        );
      }
    } else {
      const ff = c.intermediateSize;
      stacks.push(
        [
          { name: `${p}ffn_gate.weight`, dims: [h, ff] },
          { name: `${p}ffn_up.weight`, dims: [h, ff] },
        ],
        [{ name: `${p}ffn_down.weight`, dims: [ff, h] }],
      );
    }
  }
  return { vectors, stacks };
}

/** MoE gate and up experts are interleaved into one matrix: they need one type (else f32). */
function expertPairType(file: GgufFile, stack: TensorSpec[]): WeightType | null {
  if (stack.length !== 2 || !stack[0]?.name.endsWith("_gate_exps.weight")) return null;
  const types = stack.map((s) => arenaType(tensorInfo(file, s.name, s.dims)));
  return types[0] === types[1] ? (types[0] as WeightType) : GgmlType.F32;
}

/**
 * The types layer l's experts keep in kernel memory: gate|up (one type, else f32) and down; null
 * for a layer without expert tensors. @throws GgufError on misshapen or unsupported tensors.
 */
export function expertTypes(
  file: GgufFile,
  c: ModelConfig,
  l: number,
): { gateUp: WeightType; down: WeightType } | null {
  const p = `blk.${l}.`;
  if (!file.tensors.has(`${p}ffn_gate_exps.weight`)) return null;
  const h = c.hiddenSize;
  const ff = c.moeIntermediateSize;
  const e = c.numExperts;
  const pair = [
    { name: `${p}ffn_gate_exps.weight`, dims: [h, ff, e] },
    { name: `${p}ffn_up_exps.weight`, dims: [h, ff, e] },
  ];
  return {
    gateUp: expertPairType(file, pair) as WeightType,
    down: arenaType(tensorInfo(file, `${p}ffn_down_exps.weight`, [ff, h, e])),
  };
}

/** Bytes of a (rows, cols) matrix of `type` in kernel memory, with the 16-byte granule. */
export function matrixBytes(type: WeightType, rows: number, cols: number): number {
  const bytes = type === GgmlType.F32 ? 4 * rows * cols : rows * rowBytes(type, cols);
  return Math.ceil(bytes / 16) * 16;
}

/**
 * Bytes one expert of every MoE layer takes on an expert rank (its gate|up and down matrices, in
 * their kernel-memory types): what each expert held adds to a rank.
 */
export function expertBytes(file: GgufFile, c: ModelConfig): number {
  const h = c.hiddenSize;
  const ff = c.moeIntermediateSize;
  let total = 0;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const t = expertTypes(file, c, l);
    if (t) total += matrixBytes(t.gateUp, 2 * ff, h) + matrixBytes(t.down, h, ff);
  }
  return total;
}

/**
 * Bytes the weights of `selection` take in kernel memory, from the file's real tensor types (for
 * budgets: check before loading). @throws GgufError on missing, misshapen or unsupported tensors.
 */
export function weightBytes(
  file: GgufFile,
  c: ModelConfig,
  selection: WeightSelection = "all",
): number {
  const { vectors, stacks } = tensorPlan(c, selection);
  let total = 0;
  for (const v of vectors) total += arenaBytes(tensorInfo(file, v.name, v.dims), GgmlType.F32);
  for (const stack of stacks) {
    const pair = expertPairType(file, stack);
    for (const s of stack) {
      const t = tensorInfo(file, s.name, s.dims);
      total += arenaBytes(t, pair ?? arenaType(t));
    }
  }
  return total;
}

/**
 * Copies the GGUF's tensors of `selection` into `kernels` memory.
 * @throws GgufError on missing or misshapen tensors.
 */
export function loadWeights(
  file: GgufFile,
  bytes: Uint8Array,
  c: ModelConfig,
  kernels: Kernels,
  selection: WeightSelection = "all",
): ModelWeights {
  return placeWeights(file, bytes, c, kernels, selection);
}

/**
 * The weights of `selection` laid out in `kernels` memory exactly as `loadWeights` lays them
 * out (same allocations, same order), without reading any tensor data: `file` may be parsed
 * header-only. The caller fills the region the allocations took (NPU-fork copies a serving
 * peer's built region into it). @throws GgufError on missing or misshapen tensors.
 */
export function layoutWeights(
  file: GgufFile,
  c: ModelConfig,
  kernels: Kernels,
  selection: WeightSelection = "all",
): ModelWeights {
  return placeWeights(file, null, c, kernels, selection);
}

/** Allocates the weights of `selection` and, given the GGUF's `bytes`, fills them. */
function placeWeights(
  file: GgufFile,
  bytes: Uint8Array | null,
  c: ModelConfig,
  kernels: Kernels,
  selection: WeightSelection,
): ModelWeights {
  const h = c.hiddenSize;
  const vector = (name: string, dims: number[]): Float32Array => {
    const t = tensorInfo(file, name, dims);
    const out = kernels.alloc(t.numElements);
    return bytes ? readTensorF32(file, bytes, name, out) : out;
  };
  /**
   * Reads tensors of one type back to back into one matrix, in the kernels' resident form of that
   * type; `as` forces f32.
   */
  const matrix = (parts: TensorSpec[], as?: WeightType): Matrix => {
    const infos = parts.map((p) => tensorInfo(file, p.name, p.dims));
    const fileType = as ?? arenaType(infos[0] as GgufTensorInfo);
    const type = kernels.residentType(fileType);
    const cols = infos[0]?.dims[0] as number;
    const rows = infos.reduce((a, t) => a + t.numElements / cols, 0);
    if (type === GgmlType.F32) {
      const out = kernels.alloc(rows * cols);
      let off = 0;
      for (const t of bytes ? infos : []) {
        readTensorF32(file, bytes as Uint8Array, t.name, out.subarray(off, off + t.numElements));
        off += t.numElements;
      }
      return { type, rows, cols, data: out };
    }
    const out = kernels.allocBytes(rows * rowBytes(type, cols));
    let off = 0;
    for (const t of bytes ? infos : []) {
      out.set((bytes as Uint8Array).subarray(t.offset, t.offset + t.numBytes), off);
      off += t.numBytes;
    }
    if (bytes) kernels.toResident(fileType, out);
    return { type, rows, cols, data: out };
  };
  /** A stack of parts: consecutive parts of one type are fused into one matrix. */
  const linear = (parts: TensorSpec[]): Linear => {
    const out: Matrix[] = [];
    let group: TensorSpec[] = [];
    let groupType: number | null = null;
    for (const p of parts) {
      const type = arenaType(tensorInfo(file, p.name, p.dims));
      if (groupType !== null && type !== groupType) {
        out.push(matrix(group));
        group = [];
      }
      group.push(p);
      groupType = type;
    }
    if (group.length > 0) out.push(matrix(group));
    return out;
  };

  const { stacks } = tensorPlan(c, selection);
  let next = 0;
  const take = (): TensorSpec[] => stacks[next++] as TensorSpec[];
  const tokenEmbd = matrix(take());
  const outputNorm = vector("output_norm.weight", [h]);
  const output = c.tieWordEmbeddings ? tokenEmbd : matrix(take());
  const layers: LayerWeights[] = [];
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const p = `blk.${l}.`;
    const attnNorm = vector(`${p}attn_norm.weight`, [h]);
    const wqkv = linear(take());
    const wo = linear(take());
    const qNorm = c.hasQkNorm ? vector(`${p}attn_q_norm.weight`, [c.headDim]) : null;
    const kNorm = c.hasQkNorm ? vector(`${p}attn_k_norm.weight`, [c.headDim]) : null;
    const ffnNorm = vector(`${p}ffn_norm.weight`, [h]);
    let wGateUp: Matrix;
    let wDown: Matrix;
    let wRouter: Matrix | null = null;
    if (c.numExperts > 0 && selection === "attention") {
      wRouter = matrix(take());
      wGateUp = noRows(h);
      wDown = noRows(c.moeIntermediateSize);
    } else if (c.numExperts > 0) {
      wRouter = matrix(take());
      const pair = take();
      const type = expertPairType(file, pair) as WeightType;
      wGateUp = interleaveExperts(file, bytes, pair, type, c.numExperts, kernels);
      wDown = matrix(take());
    } else {
      wGateUp = matrix(take());
      wDown = matrix(take());
    }
    layers.push({ attnNorm, wqkv, wo, qNorm, kNorm, ffnNorm, wGateUp, wDown, wRouter });
  }
  return { tokenEmbd, outputNorm, output, layers };
}

/**
 * Per expert, its gate rows then its up rows, in one matrix of `type` (the pair's common type);
 * allocated only, without `bytes`.
 */
function interleaveExperts(
  file: GgufFile,
  bytes: Uint8Array | null,
  pair: TensorSpec[],
  type: WeightType,
  e: number,
  kernels: Kernels,
): Matrix {
  const [gate, up] = pair.map((s) => tensorInfo(file, s.name, s.dims)) as [
    GgufTensorInfo,
    GgufTensorInfo,
  ];
  const cols = gate.dims[0] as number;
  const rows = (2 * gate.numElements) / cols;
  if (type === GgmlType.F32) {
    const out = kernels.alloc(rows * cols);
    if (!bytes) return { type, rows, cols, data: out };
    const g = readTensorF32(file, bytes, gate.name);
    const u = readTensorF32(file, bytes, up.name);
    const per = g.length / e;
    for (let x = 0; x < e; x++) {
      out.set(g.subarray(x * per, (x + 1) * per), x * 2 * per);
      out.set(u.subarray(x * per, (x + 1) * per), (x * 2 + 1) * per);
    }
    return { type, rows, cols, data: out };
  }
  const out = kernels.allocBytes(2 * gate.numBytes);
  if (!bytes) return { type, rows, cols, data: out };
  const per = gate.numBytes / e;
  for (let x = 0; x < e; x++) {
    out.set(bytes.subarray(gate.offset + x * per, gate.offset + (x + 1) * per), x * 2 * per);
    out.set(bytes.subarray(up.offset + x * per, up.offset + (x + 1) * per), (x * 2 + 1) * per);
  }
  return { type, rows, cols, data: out };
}
