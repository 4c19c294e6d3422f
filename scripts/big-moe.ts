/**
 * A seeded MoE checkpoint as large as asked: the embedded default model (`llama` with experts)
 * with its attention, norms, embedding and output kept, and its experts replaced by `numExperts`
 * seeded experts of width `expertFf` (F16, std gain / sqrt(fan_in), new router rows of std
 * 1 / sqrt(dim)). Its size is about numLayers x numExperts x 3 x dim x expertFf x 2 bytes, so it
 * can exceed one NPU's budget while its attention half stays small. Pure: the bytes of the base
 * model in, the new file's bytes out (scripts/make-big-moe.ts writes it; tests build small ones
 * in memory). Never committed.
 */
import {
  GgmlType,
  type GgufMetadataEntry,
  type GgufTensorInput,
  GgufType,
  type GgufTypeId,
  type GgufValue,
  parseGguf,
  writeGguf,
} from "../shared/gguf/gguf.ts";
import { readTensorF32 } from "../shared/model/quant.ts";
import { gaussian, mulberry32 } from "../shared/random.ts";

export interface BigMoeOptions {
  name: string;
  numExperts: number;
  expertFf: number;
  topK: number;
  seed: number;
  /** Expert weight std is gain / sqrt(fan_in). */
  gain?: number;
}

/** make-big-moe.ts's defaults: 32 experts of width 2048 (about 145 MiB, over the 96 MiB budget). */
export const BIG_MOE_DEFAULTS: BigMoeOptions = {
  name: "big-moe",
  numExperts: 32,
  expertFf: 2048,
  topK: 2,
  seed: 7,
};

const ARRAY_ITEM_TYPES: Record<string, Exclude<GgufTypeId, 9>> = {
  "tokenizer.ggml.tokens": GgufType.STRING,
  "tokenizer.ggml.scores": GgufType.FLOAT32,
  "tokenizer.ggml.token_type": GgufType.INT32,
  "tokenizer.ggml.merges": GgufType.STRING,
};

function isExpertOrRouter(name: string): boolean {
  return /^blk\.\d+\.ffn_(gate_inp|gate_exps|up_exps|down_exps)\.weight$/.test(name);
}

export function buildBigMoe(base: Uint8Array, o: BigMoeOptions): Uint8Array {
  const file = parseGguf(base);
  const arch = file.metadata.get("general.architecture");
  if (arch !== "llama") throw new Error(`the base model must be llama with experts, not ${arch}`);
  const dim = file.metadata.get("llama.embedding_length") as number;
  const numLayers = file.metadata.get("llama.block_count") as number;
  const overrides: Record<string, GgufValue> = {
    "general.name": o.name,
    "llama.expert_count": o.numExperts,
    "llama.expert_used_count": o.topK,
    "llama.feed_forward_length": o.expertFf,
  };
  const metadata: GgufMetadataEntry[] = [];
  for (const [key, value] of file.metadata) {
    if (key === "general.alignment") continue;
    const type = file.metadataTypes.get(key) as GgufTypeId;
    const v = overrides[key] ?? value;
    if (type === GgufType.ARRAY) {
      const itemType = ARRAY_ITEM_TYPES[key];
      if (itemType === undefined) throw new Error(`no item type known for metadata array ${key}`);
      metadata.push({ key, type: GgufType.ARRAY, itemType, value: v as GgufValue[] });
    } else {
      metadata.push({ key, type, value: v } as GgufMetadataEntry);
    }
  }
  const tensors: GgufTensorInput[] = [];
  for (const t of file.tensors.values()) {
    if (isExpertOrRouter(t.name)) continue;
    tensors.push({
      name: t.name,
      dims: t.dims,
      type: t.type === GgmlType.F32 ? GgmlType.F32 : GgmlType.F16,
      data: readTensorF32(file, base, t.name),
    });
  }
  const rng = gaussian(mulberry32(o.seed));
  const noise = (n: number, std: number) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = rng() * std;
    return out;
  };
  const gain = o.gain ?? 0.5;
  const E = o.numExperts;
  const ff = o.expertFf;
  for (let l = 0; l < numLayers; l++) {
    const p = `blk.${l}.`;
    const f16 = GgmlType.F16;
    tensors.push(
      {
        name: `${p}ffn_gate_inp.weight`,
        dims: [dim, E],
        type: GgmlType.F32,
        data: noise(dim * E, 1 / Math.sqrt(dim)),
      },
      {
        name: `${p}ffn_gate_exps.weight`,
        dims: [dim, ff, E],
        type: f16,
        data: noise(dim * ff * E, gain / Math.sqrt(dim)),
      },
      {
        name: `${p}ffn_up_exps.weight`,
        dims: [dim, ff, E],
        type: f16,
        data: noise(dim * ff * E, gain / Math.sqrt(dim)),
      },
      {
        name: `${p}ffn_down_exps.weight`,
        dims: [ff, dim, E],
        type: f16,
        data: noise(ff * dim * E, gain / Math.sqrt(ff)),
      },
    );
  }
  return writeGguf(metadata, tensors);
}
