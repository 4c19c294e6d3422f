/**
 * A model card for a model nobody measured, derived from its architecture (GGUF metadata) and a
 * card measured on this engine for another checkpoint (profile:steps). Each step-time
 * coefficient is scaled by the ratio, target over reference, of what it pays for:
 *
 *   b (per scheduled token): the layers' projections and the active FFN (experts: top-k of them
 *     plus the router), numHiddenLayers x (h x (q + 2 kv) + q x h + FFN) multiply-adds;
 *   c and e (per attended pair): QK and AV over every query head, numHiddenLayers x 2 x q;
 *   d (per sequence): the LM head of its sampled token, vocabSize x h;
 *   a (per step): the weights' bytes (the GGUF file's size), which a step reads once.
 *
 * On the measured CPU card (bench/cards/synthetic-moe-cpu.json) b, c and d each imply the same
 * multiply-add rate within 10%, and a implies 17.8 GB/s of weights, against 16.2 GB/s measured on
 * a 51M-parameter llama (README "Default PD heatmap"). Larger matrices run at more multiply-adds
 * per ms, so b, c and d come out high for a model much larger than the reference (about 3x at 51M
 * parameters). The KV bytes a PD handoff moves are the engine's own (f32 K and V per layer,
 * `kvBytesPerBlock`); the fabric and serving-path figures and the instance shape are the
 * reference card's unless `shape` overrides them, `maxModelLen` is the model's context, and the
 * instances run in parallel (`pathSharesThread` false), as deployed. Pure.
 */
import { type ModelConfig, numParameters } from "../model/config.ts";
import { kvBytesPerBlock } from "../model/transformer.ts";
import type { ModelCard } from "./cost-model.ts";

/** The architecture figures the step costs scale with. */
export type MacShape = Pick<
  ModelConfig,
  | "hiddenSize"
  | "numHiddenLayers"
  | "numAttentionHeads"
  | "numKeyValueHeads"
  | "headDim"
  | "intermediateSize"
  | "numExperts"
  | "numExpertsPerTok"
  | "moeIntermediateSize"
  | "vocabSize"
>;

/** Multiply-adds behind each step-time coefficient for one model. */
export interface StepMacs {
  /** Per scheduled token. */
  token: number;
  /** Per attended (query, key) pair. */
  pair: number;
  /** Per sequence in the step (its sampled token's LM head). */
  seq: number;
}

export function stepMacs(c: MacShape): StepMacs {
  const h = c.hiddenSize;
  const q = c.numAttentionHeads * c.headDim;
  const kv = c.numKeyValueHeads * c.headDim;
  const ffn =
    c.numExperts > 0
      ? c.numExpertsPerTok * 3 * h * c.moeIntermediateSize + h * c.numExperts
      : 3 * h * c.intermediateSize;
  return {
    token: c.numHiddenLayers * (h * (q + 2 * kv) + q * h + ffn),
    pair: c.numHiddenLayers * 2 * q,
    seq: c.vocabSize * h,
  };
}

/** A measured card, and the architecture and file size of the checkpoint it was measured on. */
export interface ReferenceCard {
  card: ModelCard;
  config: MacShape;
  weightBytes: number;
}

/** The model a card is derived for: its architecture and its weights' bytes (GGUF file size). */
export interface DeriveTarget {
  config: ModelConfig;
  weightBytes: number;
}

/** Card fields a caller may set for the derived card (the instance shape it will run with). */
export type CardShape = Partial<
  Pick<ModelCard, "kvCapacityTokens" | "blockSize" | "maxNumSeqs" | "maxNumBatchedTokens">
>;

/** KV bytes per token this engine stores (and a PD handoff moves): f32 K and V, every layer. */
export function engineKvBytesPerToken(c: ModelConfig): number {
  return kvBytesPerBlock(c, 1);
}

const round = (x: number) => Number(x.toPrecision(4));

/** The card of `target` scaled from `ref` (see the module comment). */
export function deriveCard(
  { config, weightBytes }: DeriveTarget,
  ref: ReferenceCard,
  shape: CardShape = {},
): ModelCard {
  const t = stepMacs(config);
  const r = stepMacs(ref.config);
  const w = weightBytes / ref.weightBytes;
  const { card } = ref;
  const derived: ModelCard = {
    ...card,
    name: `${config.name} (derived from ${card.name})`,
    source: `derived by shared/sim/derive-card.ts from the architecture (${numParameters(config)} parameters, ${weightBytes} bytes) and the measured card of ${card.checkpoint ?? card.name}: multiply-adds per token ${round(t.token / r.token)}x, per attended pair ${round(t.pair / r.pair)}x, per sequence ${round(t.seq / r.seq)}x; weight bytes per step ${round(w)}x`,
    a: round(card.a * w),
    b: round((card.b * t.token) / r.token),
    c: round((card.c * t.pair) / r.pair),
    d: round((card.d * t.seq) / r.seq),
    kvBytesPerToken: engineKvBytesPerToken(config),
    maxModelLen: config.maxPositionEmbeddings,
    // deployed, each instance has its own thread (the reference was measured on the local
    // server, where one thread takes every instance's steps in turn)
    pathSharesThread: false,
    ...shape,
  };
  delete derived.checkpoint;
  if (card.e !== undefined) derived.e = round((card.e * t.pair) / r.pair);
  return derived;
}
