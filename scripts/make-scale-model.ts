/**
 * A generated checkpoint of tens of MB for the scaling benchmark (`bench:scale`): the default
 * model's architecture, tokenizer and chat template at larger dimensions (dim 256, 6 layers,
 * 8 heads of 32, 2 KV heads, 8 experts top-2 of ffn 256, context 512), F32 tensors drawn from a
 * seeded Gaussian. About 43 MB. Built in memory on demand, never written into the repository.
 * Its output is noise; it exists to measure how fast weights of this size reach new instances.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
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
import { u32 } from "./gguf-entries.ts";

const SEED = 0x5ca1e;
const DIMS = {
  hiddenSize: 256,
  numHiddenLayers: 6,
  numAttentionHeads: 8,
  numKeyValueHeads: 2,
  headDim: 32,
  numExperts: 8,
  numExpertsPerTok: 2,
  expertFfn: 256,
  contextLength: 512,
};

/** The metadata of `base` with the llama dimensions replaced (arrays keep their item types). */
function metadataFrom(base: ReturnType<typeof parseGguf>): GgufMetadataEntry[] {
  const dims: Record<string, number> = {
    "llama.embedding_length": DIMS.hiddenSize,
    "llama.block_count": DIMS.numHiddenLayers,
    "llama.attention.head_count": DIMS.numAttentionHeads,
    "llama.attention.head_count_kv": DIMS.numKeyValueHeads,
    "llama.rope.dimension_count": DIMS.headDim,
    "llama.expert_count": DIMS.numExperts,
    "llama.expert_used_count": DIMS.numExpertsPerTok,
    "llama.feed_forward_length": DIMS.expertFfn,
    "llama.expert_feed_forward_length": DIMS.expertFfn,
    "llama.context_length": DIMS.contextLength,
  };
  const out: GgufMetadataEntry[] = [];
  for (const [key, value] of base.metadata) {
    if (key in dims || key === "general.file_type") continue;
    const type = base.metadataTypes.get(key) as GgufTypeId;
    if (type === GgufType.ARRAY) {
      const items = value as unknown[];
      const itemType =
        typeof items[0] === "string"
          ? GgufType.STRING
          : key.endsWith("scores")
            ? GgufType.FLOAT32
            : GgufType.INT32;
      out.push({ key, type: GgufType.ARRAY, itemType, value: items as never });
    } else {
      out.push({ key, type: type as Exclude<GgufTypeId, 9>, value: value as never });
    }
  }
  for (const [key, value] of Object.entries(dims)) out.push(u32(key, value));
  out.push(u32("general.file_type", 0)); // all F32
  return out;
}

/** Builds the checkpoint. Deterministic: same bytes on every call. */
export function buildScaleModel(repoRoot: string): Uint8Array {
  const base = parseGguf(new Uint8Array(readFileSync(join(repoRoot, "models/synthetic-moe.gguf"))));
  const normal = gaussian(mulberry32(SEED));
  const d = DIMS;
  const dim = d.hiddenSize;
  const qDim = d.numAttentionHeads * d.headDim;
  const kvDim = d.numKeyValueHeads * d.headDim;
  const vocab = base.tensors.get("token_embd.weight")?.dims[1] as number;
  const rand = (n: number, std: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = normal() * std;
    return out;
  };
  const t = (name: string, dims: number[], data?: Float32Array): GgufTensorInput => {
    const n = dims.reduce((a, b) => a * b, 1);
    return {
      name,
      dims,
      type: GgmlType.F32,
      data: data ?? rand(n, 1 / Math.sqrt(dims[0] as number)),
    };
  };
  const ones = (n: number) => new Float32Array(n).fill(1);
  const tensors: GgufTensorInput[] = [t("token_embd.weight", [dim, vocab], rand(dim * vocab, 1))];
  for (let l = 0; l < d.numHiddenLayers; l++) {
    const p = `blk.${l}`;
    tensors.push(
      t(`${p}.attn_norm.weight`, [dim], ones(dim)),
      t(`${p}.attn_q.weight`, [dim, qDim]),
      t(`${p}.attn_k.weight`, [dim, kvDim]),
      t(`${p}.attn_v.weight`, [dim, kvDim]),
      t(`${p}.attn_output.weight`, [qDim, dim]),
      t(`${p}.ffn_norm.weight`, [dim], ones(dim)),
      t(`${p}.ffn_gate_inp.weight`, [dim, d.numExperts]),
      t(`${p}.ffn_gate_exps.weight`, [dim, d.expertFfn, d.numExperts]),
      t(`${p}.ffn_up_exps.weight`, [dim, d.expertFfn, d.numExperts]),
      t(`${p}.ffn_down_exps.weight`, [d.expertFfn, dim, d.numExperts]),
    );
  }
  tensors.push(t("output_norm.weight", [dim], ones(dim)), t("output.weight", [dim, vocab]));
  return writeGguf(metadataFrom(base), tensors);
}
