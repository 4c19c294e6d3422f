/**
 * Model configuration read from GGUF metadata. Field names follow Hugging Face config.json in
 * camelCase so they map one to one. Pure; no I/O.
 */
import { GgufError, type GgufFile, metaNumber, metaString, requireNumber } from "../gguf/gguf.ts";

export type Architecture = "llama" | "qwen3moe";
/** "norm" rotates adjacent pairs (2i, 2i+1); "neox" rotates (i, i + ropeDim/2). */
export type RopeStyle = "norm" | "neox";

export interface ModelConfig {
  architecture: Architecture;
  name: string;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  /** Dense FFN width (0 when every layer is MoE and the GGUF does not say). */
  intermediateSize: number;
  /** 0 for dense models. */
  numExperts: number;
  numExpertsPerTok: number;
  /** Width of one expert's FFN. */
  moeIntermediateSize: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeStyle: RopeStyle;
  /** Number of leading dims of each head that RoPE rotates. */
  ropeDim: number;
  /** Context length the model was trained at (GGUF `<arch>.context_length`). */
  maxPositionEmbeddings: number;
  /** Per-head RMSNorm of q and k before RoPE (Qwen3). */
  hasQkNorm: boolean;
  tieWordEmbeddings: boolean;
}

export const SUPPORTED_ARCHITECTURES: readonly Architecture[] = ["llama", "qwen3moe"];

/** @throws GgufError for unsupported architectures or missing metadata. */
export function modelConfigFromGguf(file: GgufFile): ModelConfig {
  const arch = metaString(file, "general.architecture");
  if (arch === undefined) throw new GgufError("missing general.architecture");
  if (!SUPPORTED_ARCHITECTURES.includes(arch as Architecture)) {
    throw new GgufError(
      `unsupported architecture "${arch}": this engine runs ${SUPPORTED_ARCHITECTURES.join(", ")}`,
    );
  }
  const a = arch as Architecture;
  const k = (suffix: string) => `${a}.${suffix}`;
  const hiddenSize = requireNumber(file, k("embedding_length"));
  const numAttentionHeads = requireNumber(file, k("attention.head_count"));
  const numKeyValueHeads = metaNumber(file, k("attention.head_count_kv")) ?? numAttentionHeads;
  const headDim = metaNumber(file, k("attention.key_length")) ?? hiddenSize / numAttentionHeads;
  const valueDim = metaNumber(file, k("attention.value_length")) ?? headDim;
  if (valueDim !== headDim) throw new GgufError("key_length != value_length is not supported");
  if (!Number.isInteger(headDim) || numAttentionHeads % numKeyValueHeads !== 0) {
    throw new GgufError("head counts do not divide evenly");
  }
  const embd = file.tensors.get("token_embd.weight");
  if (!embd) throw new GgufError("missing tensor token_embd.weight");
  const vocabSize = metaNumber(file, k("vocab_size")) ?? (embd.dims[1] as number);
  const numExperts = metaNumber(file, k("expert_count")) ?? 0;
  const numExpertsPerTok = metaNumber(file, k("expert_used_count")) ?? 0;
  if (numExperts > 0 && (numExpertsPerTok < 1 || numExpertsPerTok > numExperts)) {
    throw new GgufError(`bad expert_used_count ${numExpertsPerTok} for ${numExperts} experts`);
  }
  const intermediateSize = metaNumber(file, k("feed_forward_length")) ?? 0;
  const moeIntermediateSize =
    metaNumber(file, k("expert_feed_forward_length")) ?? (numExperts > 0 ? intermediateSize : 0);
  const ropeDim = metaNumber(file, k("rope.dimension_count")) ?? headDim;
  if (ropeDim > headDim || ropeDim % 2 !== 0) throw new GgufError(`bad rope dimension ${ropeDim}`);
  return {
    architecture: a,
    name: metaString(file, "general.name") ?? a,
    hiddenSize,
    numHiddenLayers: requireNumber(file, k("block_count")),
    numAttentionHeads,
    numKeyValueHeads,
    headDim,
    intermediateSize,
    numExperts,
    numExpertsPerTok,
    moeIntermediateSize,
    vocabSize,
    rmsNormEps: metaNumber(file, k("attention.layer_norm_rms_epsilon")) ?? 1e-5,
    ropeTheta: metaNumber(file, k("rope.freq_base")) ?? 10000,
    ropeStyle: a === "qwen3moe" ? "neox" : "norm",
    ropeDim,
    maxPositionEmbeddings: requireNumber(file, k("context_length")),
    hasQkNorm: file.tensors.has("blk.0.attn_q_norm.weight"),
    tieWordEmbeddings: !file.tensors.has("output.weight"),
  };
}

/** Number of parameters, for memory budgets and reports. */
export function numParameters(c: ModelConfig): number {
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const attn = c.hiddenSize * (qDim + 2 * kvDim) + qDim * c.hiddenSize + 2 * c.hiddenSize;
  const ffn =
    c.numExperts > 0
      ? c.numExperts * (3 * c.hiddenSize * c.moeIntermediateSize + c.hiddenSize)
      : 3 * c.hiddenSize * c.intermediateSize;
  const qk = c.hasQkNorm ? 2 * c.headDim : 0;
  const embed = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
  return c.numHiddenLayers * (attn + ffn + qk) + embed;
}
