/**
 * GGUF metadata entries for the scripts that write checkpoints: typed scalars, and the llama
 * shape keys they all write in the same order.
 */
import { type GgufMetadataEntry, GgufType } from "../shared/gguf/gguf.ts";

export const u32 = (key: string, value: number): GgufMetadataEntry => ({
  key,
  type: GgufType.UINT32,
  value,
});

export const f32 = (key: string, value: number): GgufMetadataEntry => ({
  key,
  type: GgufType.FLOAT32,
  value,
});

export const str = (key: string, value: string): GgufMetadataEntry => ({
  key,
  type: GgufType.STRING,
  value,
});

export const bool = (key: string, value: boolean): GgufMetadataEntry => ({
  key,
  type: GgufType.BOOL,
  value,
});

export interface LlamaShape {
  contextLength: number;
  dim: number;
  layers: number;
  ff: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
}

/** llama.context_length through llama.attention.layer_norm_rms_epsilon. */
export function llamaShapeEntries(s: LlamaShape): GgufMetadataEntry[] {
  return [
    u32("llama.context_length", s.contextLength),
    u32("llama.embedding_length", s.dim),
    u32("llama.block_count", s.layers),
    u32("llama.feed_forward_length", s.ff),
    u32("llama.attention.head_count", s.heads),
    u32("llama.attention.head_count_kv", s.kvHeads),
    u32("llama.rope.dimension_count", s.headDim),
    f32("llama.rope.freq_base", s.ropeTheta),
    f32("llama.attention.layer_norm_rms_epsilon", s.rmsNormEps),
  ];
}
