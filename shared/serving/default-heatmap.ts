/**
 * The PD heatmap a model gets when nobody profiled it (`groupReason` "default-heatmap"): the
 * simulator's heatmap (shared/sim/heatmap.ts: per (input, output) cell, request-unique prompts of
 * that shape on two colocated instances vs one prefill + one decode, Poisson arrivals at a
 * utilization of the colocated pair's saturation, mean end-to-end latency) run on a card derived
 * from the model's architecture and this engine's measured card (shared/sim/derive-card.ts,
 * reference-card.ts). Deterministic (seeded), so every JobExecutor shard derives the same one.
 * A measured profile (`npm run -s profile:pd`) always wins over it. Pure.
 */
import type { GgufFile } from "../gguf/gguf.ts";
import { modelConfigFromGguf } from "../model/config.ts";
import type { ModelCard } from "../sim/cost-model.ts";
import type { CardShape, DeriveTarget } from "../sim/derive-card.ts";
import { deriveCard } from "../sim/derive-card.ts";
import { measureHeatmap } from "../sim/heatmap.ts";
import { REFERENCE_CPU_CARD } from "../sim/reference-card.ts";
import type { DeploymentMode } from "../types/deployments.ts";
import type { PdProfile } from "./pd-profile.ts";

export interface DefaultHeatmapOptions {
  /** Load of each cell, as a fraction of the colocated pair's saturation on that cell. */
  utilization: number;
  requestsPerCell: number;
  seed: number;
}

/**
 * One rate, the middle of sim:heatmap's three; 32 requests per cell: at 32 no cell's sign
 * changed over seeds 1-3 for the lemma, synthetic and 8B-shaped models, at 16 some did.
 */
export const DEFAULT_HEATMAP: DefaultHeatmapOptions = {
  utilization: 0.5,
  requestsPerCell: 32,
  seed: 1,
};

/**
 * Bucket bounds for a context: inputs up to half of it, outputs up to a quarter. They include
 * sim:heatmap's (the 8B card's) up to 8192 in and 512 out, so the two can be compared there.
 */
export function defaultHeatmapBuckets(maxModelLen: number): {
  inputBuckets: number[];
  outputBuckets: number[];
} {
  return {
    inputBuckets: [32, 128, 512, 2048, 8192].filter((x) => x <= maxModelLen / 2),
    outputBuckets: [16, 128, 512].filter((x) => x <= maxModelLen / 4),
  };
}

/**
 * The default heatmap of `model` (its GGUF's config and size), at `opts.utilization` (pass
 * several to `measureHeatmap` with the same card for sign stability: scripts/default-heatmap.ts).
 * @throws Error when the context is too short for a bucket (under 64 tokens).
 */
export function defaultPdProfile(
  model: string,
  target: DeriveTarget,
  shape: CardShape = {},
  opts: DefaultHeatmapOptions = DEFAULT_HEATMAP,
): PdProfile {
  return cardPdProfile(model, deriveCard(target, REFERENCE_CPU_CARD, shape), opts);
}

/**
 * The default heatmap on a given card (the derived one above, or the simulator's own card when
 * `sim:serve --pd` runs without `--profile`, as the JobExecutor would derive one).
 * @throws Error when the context is too short for a bucket (under 64 tokens).
 */
export function cardPdProfile(
  model: string,
  card: ModelCard,
  opts: DefaultHeatmapOptions = DEFAULT_HEATMAP,
): PdProfile {
  const buckets = defaultHeatmapBuckets(card.maxModelLen);
  if (buckets.inputBuckets.length === 0 || buckets.outputBuckets.length === 0) {
    throw new Error(`context of ${card.maxModelLen} tokens is too short for a heatmap`);
  }
  const r = measureHeatmap(card, {
    ...buckets,
    utilizations: [opts.utilization],
    requestsPerCell: opts.requestsPerCell,
    seed: opts.seed,
  });
  const profile = r.profiles[0];
  if (!profile) throw new Error("the heatmap measured no profile");
  return { ...profile, model };
}

/** Whether `groups` mix modes, so that the group step reads a heatmap (`choosePdGroup`). */
export function mixesModes(groups: readonly { mode: DeploymentMode }[]): boolean {
  return groups.some((g) => g.mode !== (groups[0] as { mode: DeploymentMode }).mode);
}

/**
 * A model's default heatmap, derived when the group step first needs one and kept for the
 * model's generation (one per ModelScheduler): tens to hundreds of ms once (README "Default PD
 * heatmap"), never per request, once the model's GGUF header was read (`readHeader`).
 */
export class DefaultHeatmap {
  target: DeriveTarget | null = null;
  /** Why the derivation failed (then the group step goes by pressure, "no-profile"), or null. */
  error: string | null = null;
  #profile: PdProfile | null = null;

  constructor(
    readonly model: string,
    private readonly shape: CardShape = {},
  ) {}

  /** Reads the model's architecture from its GGUF header, and the file's size. */
  readHeader(file: GgufFile, weightBytes: number): void {
    this.target = { config: modelConfigFromGguf(file), weightBytes };
  }

  /** The heatmap for `groups` when they mix modes (derived on this first call), else null. */
  for(groups: readonly { mode: DeploymentMode }[]): PdProfile | null {
    if (!this.target || this.error !== null || !mixesModes(groups)) return null;
    try {
      this.#profile ??= defaultPdProfile(this.model, this.target, this.shape);
    } catch (e) {
      this.error = (e as Error).message; // a model the simulator cannot run: no heatmap, once
    }
    return this.#profile;
  }
}
