/**
 * Builds one serving instance from GGUF bytes: config, tokenizer, weights in kernel memory,
 * KV cache sized by the memory budget, scheduler, executor and engine. Pure (the host provides
 * the bytes and the kernels).
 *
 * Memory plan: the kernel arena's capacity is the instance's budget. Weights (at their stored
 * size: quantised matrices stay quantised) and the activation
 * workspace come first; the KV cache takes what is left, capped at what `maxNumSeqs` full-length
 * sequences could use. A model that leaves no room for one full-length sequence is refused.
 */

import { type GgufFile, parseGguf } from "../gguf/gguf.ts";
import { type ModelConfig, modelConfigFromGguf } from "../model/config.ts";
import { KernelMemoryError, type Kernels } from "../model/kernels.ts";
import { kvBytesPerBlock, Transformer, workspaceBytes } from "../model/transformer.ts";
import { layoutWeights, loadWeights, type WeightSelection, weightBytes } from "../model/weights.ts";
import { Tokenizer } from "../tokenizer/tokenizer.ts";
import { Engine } from "./engine.ts";
import type { Executor } from "./executor.ts";
import { KvBlockManager } from "./kv-block-manager.ts";
import { LocalExecutor } from "./local-executor.ts";
import { Scheduler } from "./scheduler.ts";

export const DEFAULT_BLOCK_SIZE = 16;
export const DEFAULT_MAX_NUM_SEQS = 32;
export const DEFAULT_MAX_NUM_BATCHED_TOKENS = 256;

export interface InstanceOptions {
  maxNumSeqs?: number;
  maxNumBatchedTokens?: number;
  blockSize?: number;
  /** Overrides the GGUF's context length (the CLI's --ctx-size). */
  maxModelLen?: number;
  /** "attention": leave the MoE experts to expert ranks (moe-attention); default "all". */
  weights?: WeightSelection;
  /** Activation workspaces (2: ping-pong micro-batches, Transformer.twin); default 1. */
  workspaces?: number;
}

export interface MemoryPlan {
  weightBytes: number;
  workspaceBytes: number;
  kvBytesPerBlock: number;
  numBlocks: number;
  capacityBytes: number;
}

export interface ModelInstance {
  config: ModelConfig;
  file: GgufFile;
  tokenizer: Tokenizer;
  transformer: Transformer;
  scheduler: Scheduler;
  engine: Engine;
  memory: MemoryPlan;
  /** Kernel-memory bytes the loaded weights took (measured around the load, not planned). */
  residentWeightBytes: number;
}

interface ResolvedOptions {
  weights: WeightSelection;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  blockSize: number;
  maxModelLen: number;
  workspaces: number;
}

function resolve(c: ModelConfig, o: InstanceOptions): ResolvedOptions {
  const maxModelLen = o.maxModelLen ?? c.maxPositionEmbeddings;
  if (!Number.isInteger(maxModelLen) || maxModelLen < 2) {
    throw new RangeError(`context size must be an integer >= 2, got ${maxModelLen}`);
  }
  return {
    weights: o.weights ?? "all",
    maxNumSeqs: o.maxNumSeqs ?? DEFAULT_MAX_NUM_SEQS,
    maxNumBatchedTokens: o.maxNumBatchedTokens ?? DEFAULT_MAX_NUM_BATCHED_TOKENS,
    blockSize: o.blockSize ?? DEFAULT_BLOCK_SIZE,
    maxModelLen,
    workspaces: o.workspaces ?? 1,
  };
}

/**
 * Bytes one NPU needs for the model (the weights of `o.weights`, at their real stored sizes)
 * with KV for one full-length sequence (the least it runs in).
 */
export function memoryNeeded(file: GgufFile, c: ModelConfig, o: InstanceOptions = {}): number {
  const r = resolve(c, o);
  const perBlock = kvBytesPerBlock(c, r.blockSize) + 32;
  return (
    weightBytes(file, c, r.weights) +
    r.workspaces * workspaceBytes(c, { ...r, maxNumTokens: r.maxNumBatchedTokens }) +
    Math.ceil(r.maxModelLen / r.blockSize) * perBlock
  );
}

/**
 * Plans memory for a model under a budget, from the file's real tensor sizes. @throws KernelMemoryError with a message that says
 * how much was needed when the model does not fit.
 */
export function planMemory(
  file: GgufFile,
  c: ModelConfig,
  capacityBytes: number,
  o: InstanceOptions = {},
): MemoryPlan {
  const r = resolve(c, o);
  const w = weightBytes(file, c, r.weights);
  const ws = r.workspaces * workspaceBytes(c, { ...r, maxNumTokens: r.maxNumBatchedTokens });
  const perBlock = kvBytesPerBlock(c, r.blockSize) + 32; // + allocation rounding slack
  const blocksPerSeq = Math.ceil(r.maxModelLen / r.blockSize);
  const left = capacityBytes - w - ws;
  const numBlocks = Math.min(Math.floor(left / perBlock), blocksPerSeq * r.maxNumSeqs);
  if (numBlocks < blocksPerSeq) {
    const need = memoryNeeded(file, c, o);
    throw new KernelMemoryError(
      `model "${c.name}" needs ${mib(need)} MiB (weights ${mib(w)}, workspace ${mib(ws)}, KV for one ` +
        `${r.maxModelLen}-token sequence ${mib(blocksPerSeq * perBlock)}) but the budget is ${mib(capacityBytes)} MiB`,
    );
  }
  return {
    weightBytes: w,
    workspaceBytes: ws,
    kvBytesPerBlock: perBlock,
    numBlocks,
    capacityBytes,
  };
}

function mib(n: number): string {
  return (n / 2 ** 20).toFixed(1);
}

/**
 * What an instance is built from: a whole GGUF; a parsed GGUF and the bytes its tensor offsets
 * point into (`GgufImage`: gguf-ranges.ts makes an attention rank's compact image, without the
 * experts); or (NPU-fork) its header and `fill(fromByte, numBytes)`, which writes the weight
 * region that building from the GGUF would have filled (layoutWeights allocates it the same way;
 * a fork copies a serving peer's region into it).
 */
export interface GgufImage {
  file: GgufFile;
  bytes: Uint8Array;
}
export interface ForkedRegion {
  header: Uint8Array;
  fill: (fromByte: number, numBytes: number) => void;
}
export type InstanceSource = Uint8Array | GgufImage | ForkedRegion;

/**
 * Loads a model into `kernels` and builds its engine. `makeExecutor` lets a host swap the
 * executor (the default runs everything locally).
 * @throws GgufError for bad files, KernelMemoryError when over budget.
 */
export function createInstance(
  src: InstanceSource,
  kernels: Kernels,
  options: InstanceOptions = {},
  makeExecutor: (t: Transformer) => Executor = (t) => new LocalExecutor(t),
): ModelInstance {
  const image: GgufImage | null =
    src instanceof Uint8Array ? { file: parseGguf(src), bytes: src } : "bytes" in src ? src : null;
  const fork = image ? null : (src as ForkedRegion);
  const file = image ? image.file : parseGguf((fork as ForkedRegion).header, { headerOnly: true });
  const config = modelConfigFromGguf(file);
  const tokenizer = Tokenizer.fromGguf(file.metadata);
  const r = resolve(config, options);
  const memory = planMemory(file, config, kernels.capacityBytes - kernels.usedBytes, r);
  const usedBefore = kernels.usedBytes;
  const weights = image
    ? loadWeights(file, image.bytes, config, kernels, r.weights)
    : layoutWeights(file, config, kernels, r.weights);
  const residentWeightBytes = kernels.usedBytes - usedBefore;
  fork?.fill(usedBefore, residentWeightBytes);
  const transformer = new Transformer(config, weights, kernels, {
    maxNumTokens: r.maxNumBatchedTokens,
    maxNumSeqs: r.maxNumSeqs,
    maxModelLen: r.maxModelLen,
    blockSize: r.blockSize,
    numBlocks: memory.numBlocks,
  });
  const scheduler = new Scheduler(
    {
      maxNumSeqs: r.maxNumSeqs,
      maxNumBatchedTokens: r.maxNumBatchedTokens,
      maxModelLen: r.maxModelLen,
      eosIds: Array.from({ length: config.vocabSize }, (_, i) => i).filter((i) =>
        tokenizer.isEog(i),
      ),
    },
    new KvBlockManager(memory.numBlocks, r.blockSize),
  );
  const engine = new Engine(
    scheduler,
    makeExecutor(transformer),
    tokenizer,
    kvBytesPerBlock(config, r.blockSize),
  );
  return { config, file, tokenizer, transformer, scheduler, engine, memory, residentWeightBytes };
}
