/**
 * The measured card a model nobody profiled derives its card from (derive-card.ts): this
 * engine's step costs on the synthetic checkpoint, as `npm run -s profile:steps` and
 * `npm run -s profile:path` measured them (bench/cards/synthetic-moe-cpu.json at commit 8a776a7),
 * with the checkpoint's architecture and file size (models/synthetic-moe.gguf's, checked by a
 * unit test) and the PD handoff's figures, which that card lacks (below). Pinned here, not read
 * from that file: the Workers bundle cannot read it, and the simulator's validation re-measures it
 * in the local server's shape (its fit may hold a coefficient at 0), while the default heatmaps
 * documented in the README were derived from these figures.
 */
import type { ReferenceCard } from "./derive-card.ts";

/**
 * PD handoff, measured locally by `npm run -s profile:pd` (median of 5 runs per cell) on the
 * synthetic model: a PD job took a median 8.7 ms longer than a colocated one of the same shape
 * over 12 cells (inputs 16-1024, outputs 8-128; the extra task dispatch, KV export and import),
 * with no trend in the prompt's KV bytes above the run-to-run noise (±50 ms at 1024 tokens,
 * 1 MiB). So the latency is that median, and the throughput the lowest that noise allows:
 * 1 MiB in 50 ms, 0.02 GB/s. The heatmap's signs barely depend on it: at 1 GB/s, 38 of 39
 * (cell, rate) signs of the lemma and synthetic models' default heatmaps stay (README "Default
 * PD heatmap").
 */
export const REFERENCE_FABRIC = { fabricLatencyMs: 8.7, fabricGBps: 0.02 } as const;

export const REFERENCE_CPU_CARD: ReferenceCard = {
  card: {
    name: "flowserve-default-moe (measured, wasm kernels, Node 20.20.2)",
    source:
      "npm run -s profile:steps: 322 steps of flowserve-default-moe, batches 1/4/16, prompts 32/256/1024, 256-token chunks; R^2 0.998; instance shape chosen, not measured; serving path: npm run -s profile:path (direct server, 12 rounds 500 ms apart, medians, load 1.7)",
    checkpoint: "synthetic-moe.gguf",
    a: 0.09547,
    b: 0.03402,
    c: 0.0001007,
    d: 0.009291,
    maxModelLen: 32768,
    kvCapacityTokens: 262144,
    blockSize: 16,
    maxNumSeqs: 32,
    maxNumBatchedTokens: 2048,
    requestOverheadMs: 9.221,
    promptTokenOverheadMs: 0.04895,
    finishOverheadMs: 3.24,
    stepOverheadMs: 0.075,
    tokenOverheadMs: 0.311,
    pathSharesThread: true,
    ...REFERENCE_FABRIC,
  },
  config: {
    hiddenSize: 96,
    numHiddenLayers: 4,
    numAttentionHeads: 6,
    numKeyValueHeads: 2,
    headDim: 16,
    intermediateSize: 64,
    numExperts: 8,
    numExpertsPerTok: 2,
    moeIntermediateSize: 64,
    vocabSize: 768,
  },
  weightBytes: 1_700_672,
};
