/**
 * An expert rank's weights: for every MoE layer, the experts this rank holds, read by byte
 * ranges at the offsets in the GGUF's tensor table (so a rank never reads another rank's experts
 * or any attention tensor) and copied into kernel memory in the types a colocated load gives
 * them (weights.ts: their GGUF type; f32 for F32, BF16, or a gate/up pair of two types). Expert
 * e of a 3-D tensor is `rowBytes(type, cols) * rows` contiguous bytes at e times that; runs of
 * consecutive experts are read in one range per tensor. Pure apart from the `read` function the
 * host gives.
 */
import { assert } from "../assert.ts";
import { GgmlType, GgufError, type GgufFile, tensorByteSize } from "../gguf/gguf.ts";
import type { ByteRangeRead } from "../gguf/gguf-ranges.ts";
import type { ModelConfig } from "./config.ts";
import type { Kernels } from "./kernels.ts";
import type { ExpertWeights } from "./moe-split.ts";
import { dequantF32, type WeightType } from "./quant.ts";
import { expertTypes, type Matrix } from "./weights.ts";

/** Names of the three expert tensors of layer l, in the order a rank reads them. */
export function expertTensorNames(l: number): { gate: string; up: string; down: string } {
  return {
    gate: `blk.${l}.ffn_gate_exps.weight`,
    up: `blk.${l}.ffn_up_exps.weight`,
    down: `blk.${l}.ffn_down_exps.weight`,
  };
}

/** True for a tensor that lives on expert ranks in moe-attention mode. */
export function isExpertTensor(name: string): boolean {
  return /^blk\.\d+\.ffn_(gate|up|down)_exps\.weight$/.test(name);
}

/** Maximal runs [first, first + count) of consecutive ids in a sorted list. */
function runs(ids: readonly number[]): { first: number; count: number }[] {
  const out: { first: number; count: number }[] = [];
  for (const id of ids) {
    const last = out[out.length - 1];
    if (last && last.first + last.count === id) last.count++;
    else out.push({ first: id, count: 1 });
  }
  return out;
}

export class ExpertShard {
  /** Per layer: expert id -> weights (empty for dense layers). */
  private readonly layers: Map<number, ExpertWeights>[];
  /** Kernel-memory bytes the weights took, measured around the loads. */
  residentBytes = 0;
  /** GGUF bytes fetched by range reads. */
  bytesRead = 0;

  constructor(
    private readonly file: GgufFile,
    private readonly read: ByteRangeRead,
    private readonly c: ModelConfig,
    private readonly kernels: Kernels,
  ) {
    this.layers = Array.from({ length: c.numHiddenLayers }, () => new Map());
  }

  /**
   * A shard holding `expertsOf(l)` of every MoE layer l of `file` (a parsed header).
   * @throws GgufError on missing or misshapen tensors, KernelMemoryError over budget.
   */
  static async load(
    file: GgufFile,
    read: ByteRangeRead,
    c: ModelConfig,
    kernels: Kernels,
    expertsOf: (layer: number) => readonly number[],
  ): Promise<ExpertShard> {
    const shard = new ExpertShard(file, read, c, kernels);
    for (let l = 0; l < c.numHiddenLayers; l++) await shard.add(l, expertsOf(l));
    return shard;
  }

  /** Loads the experts of layer l not held yet (a dense layer: nothing). */
  async add(l: number, experts: readonly number[]): Promise<void> {
    const c = this.c;
    const held = this.layers[l];
    assert(held !== undefined, `no layer ${l}`);
    const names = expertTensorNames(l);
    if (!this.file.tensors.has(names.gate)) return;
    const ids = [...new Set(experts)].filter((e) => !held.has(e)).sort((a, b) => a - b);
    assert(
      ids.every((e) => Number.isInteger(e) && e >= 0 && e < c.numExperts),
      `expert ids must lie in [0, ${c.numExperts})`,
    );
    if (ids.length === 0) return;
    const h = c.hiddenSize;
    const ff = c.moeIntermediateSize;
    const types = expertTypes(this.file, c, l);
    assert(types !== null, `layer ${l} has no expert tensors`);
    const usedBefore = this.kernels.usedBytes;
    const fresh = new Map<number, ExpertWeights>();
    for (const e of ids) {
      fresh.set(e, {
        gateUp: this.allocMatrix(types.gateUp, 2 * ff, h),
        down: this.allocMatrix(types.down, h, ff),
      });
    }
    const per = ff * h;
    const parts = [
      {
        name: names.gate,
        dims: [h, ff, c.numExperts],
        at: (w: ExpertWeights) => w.gateUp,
        half: 0,
      },
      { name: names.up, dims: [h, ff, c.numExperts], at: (w: ExpertWeights) => w.gateUp, half: 1 },
      { name: names.down, dims: [ff, h, c.numExperts], at: (w: ExpertWeights) => w.down, half: 0 },
    ];
    for (const p of parts) {
      const t = this.file.tensors.get(p.name);
      if (!t) throw new GgufError(`missing tensor ${p.name}`);
      if (t.dims.length !== 3 || t.dims.some((d, i) => d !== p.dims[i])) {
        throw new GgufError(`tensor ${p.name} has shape [${t.dims}], expected [${p.dims}]`);
      }
      const each = tensorByteSize(t.type, per);
      for (const run of runs(ids)) {
        const length = each * run.count;
        const bytes = await this.read(t.offset + each * run.first, length);
        if (bytes.byteLength !== length) {
          throw new GgufError(
            `${p.name}: range read returned ${bytes.byteLength} of ${length} bytes`,
          );
        }
        this.bytesRead += length;
        for (let j = 0; j < run.count; j++) {
          const m = p.at(fresh.get(run.first + j) as ExpertWeights);
          const src = bytes.subarray(j * each, (j + 1) * each);
          if (m.type === GgmlType.F32) {
            dequantF32(t.type, src, m.data.subarray(p.half * per, (p.half + 1) * per), p.name);
          } else {
            assert(t.type === m.type, `${p.name}: stored ${t.type}, held as ${m.type}`);
            m.data.set(src, p.half * each);
          }
        }
      }
    }
    for (const [e, w] of fresh) held.set(e, w);
    this.residentBytes += this.kernels.usedBytes - usedBefore;
  }

  /** A (rows, cols) matrix of `type` in kernel memory. */
  private allocMatrix(type: WeightType, rows: number, cols: number): Matrix {
    if (type === GgmlType.F32) {
      return { type, rows, cols, data: this.kernels.alloc(rows * cols) };
    }
    return { type, rows, cols, data: this.kernels.allocBytes(tensorByteSize(type, rows * cols)) };
  }

  /** Expert ids held in layer l, sorted. */
  expertsIn(l: number): number[] {
    return [...(this.layers[l]?.keys() ?? [])].sort((a, b) => a - b);
  }

  /** Expert e's weights in layer l. @throws InvariantError when this rank does not hold it. */
  weightsOf(l: number, e: number): ExpertWeights {
    const w = this.layers[l]?.get(e);
    assert(w !== undefined, `this expert rank holds no expert ${e} of layer ${l}`);
    return w;
  }
}
