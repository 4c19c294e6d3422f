/**
 * A model card for a model nobody measured, derived from its architecture (GGUF metadata) and a
 * card measured on this engine for another checkpoint (profile:steps). Each step-time
 * coefficient is scaled by the ratio of the multiply-adds that coefficient pays for, target over
 * reference (`stepMacs`):
 *
 *   b (per scheduled token): the layers' projections and the active FFN (experts: top-k of them
 *     plus the router), numHiddenLayers x (h x (q + 2 kv) + q x h + FFN);
 *   c and e (per attended pair): QK and AV over every query head, numHiddenLayers x 2 x q;
 *   d (per sequence): the LM head of its sampled token, vocabSize x h;
 *   a (per step): the per-layer kernel calls, numHiddenLayers.
 *
 * On the measured CPU card (bench/cards/synthetic-moe-cpu.json) b, c and d each imply the same
 * multiply-add rate within 10% (README "Default PD heatmap"), which is what makes one rate per
 * engine a fair model. The KV bytes a PD handoff moves are the engine's own (f32 K and V per
 * layer, `kvBytesPerBlock`); the fabric and serving-path figures and the instance shape are
 * the reference card's unless `shape` overrides them, and `maxModelLen` is the model's context.
 * Pure.
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
  /** Per step: layers (kernel calls). */
  step: number;
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
    step: c.numHiddenLayers,
  };
}

/** A measured card and the architecture of the checkpoint it was measured on. */
export interface ReferenceCard {
  card: ModelCard;
  config: MacShape;
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
  target: ModelConfig,
  ref: ReferenceCard,
  shape: CardShape = {},
): ModelCard {
  const t = stepMacs(target);
  const r = stepMacs(ref.config);
  const { card } = ref;
  const derived: ModelCard = {
    ...card,
    name: `${target.name} (derived from ${card.name})`,
    source: `derived by shared/sim/derive-card.ts from the architecture (${numParameters(target)} parameters, ${target.numHiddenLayers} layers) and the measured card of ${card.checkpoint ?? card.name}: coefficients scaled by multiply-adds per token ${round(t.token / r.token)}x, per attended pair ${round(t.pair / r.pair)}x, per sequence ${round(t.seq / r.seq)}x, per step ${round(t.step / r.step)}x`,
    a: round((card.a * t.step) / r.step),
    b: round((card.b * t.token) / r.token),
    c: round((card.c * t.pair) / r.pair),
    d: round((card.d * t.seq) / r.seq),
    kvBytesPerToken: engineKvBytesPerToken(target),
    maxModelLen: target.maxPositionEmbeddings,
    ...shape,
  };
  delete derived.checkpoint;
  if (card.e !== undefined) derived.e = round((card.e * t.pair) / r.pair);
  return derived;
}
