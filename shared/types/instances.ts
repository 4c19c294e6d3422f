/**
 * Instances as the ClusterManager tracks them through DeepFlow's scale-up pipeline, and the
 * scaling bounds of a deployment. Types, and the value lists the API validates against.
 */
import type { InstanceRole } from "./records.ts";

/** An instance's life: reserved -> preloading -> loading -> warming -> serving -> draining -> stopped. */
export const INSTANCE_STATES = [
  "reserved",
  "preloading",
  "loading",
  "warming",
  "serving",
  "draining",
  "stopped",
  "failed",
] as const;
export type InstanceLifecycleState = (typeof INSTANCE_STATES)[number];

/** The states of an instance still going through the scale-up steps (not yet serving). */
export const STARTING_STATES: ReadonlySet<InstanceLifecycleState> = new Set([
  "reserved",
  "preloading",
  "loading",
  "warming",
]);

/** DeepFlow's five scale-up steps, each timed per instance. */
export const SCALE_STEPS = ["reserve", "preload", "load", "warmup", "announce"] as const;
export type ScaleStep = (typeof SCALE_STEPS)[number];

/** Where an instance's weights came from, coldest first. */
export const WEIGHT_TIERS = ["r2", "staged", "fork"] as const;
export type WeightTier = (typeof WEIGHT_TIERS)[number];

/**
 * How a scale-up loads its instances. `r2` and `staged`: every instance from that tier, on a
 * fresh Npu. `fork`: a tree broadcast from serving peers (the root from R2 when there is none),
 * on fresh Npus. `pool-fork` and `auto` (the default): the same tree, on Npus leased from the
 * pre-warmed pool when it has them.
 */
export const LOAD_PATHS = ["auto", "r2", "staged", "fork", "pool-fork"] as const;
export type LoadPath = (typeof LOAD_PATHS)[number];

/** Where one instance reads its weights from (a fork names the peer instance it copies). */
export type WeightSource =
  | { tier: "r2" }
  | { tier: "staged" }
  | { tier: "fork"; fromInstanceId: string };

/**
 * The roles whose instances scale one by one (a moe-attention instance, its attention and expert
 * ranks, is set up whole).
 */
export type ScalableRole = Exclude<InstanceRole, "attention">;

export const SCALABLE_ROLES: readonly ScalableRole[] = ["colocated", "prefill", "decode"];

/** Instances per role (a colocated deployment uses `colocated`, a PD one `prefill`/`decode`). */
export type RoleCounts = Record<ScalableRole, number>;

/** What a load read from each tier, and how long its Npu-side steps took. */
export interface LoadReport {
  bytesByTier: Record<WeightTier, number>;
  preloadMs: number;
  loadMs: number;
  /** The kernel arena the model's instance reserved. */
  arenaBytes: number;
  /** SHA-256 (hex) of the weights as they sit in the instance's kernel memory. */
  weightsDigest: string;
}

export interface InstanceStatus {
  id: string;
  deploymentId: string;
  role: ScalableRole;
  state: InstanceLifecycleState;
  /** Leased from the pre-warmed pool (its runtime was already up). */
  fromPool: boolean;
  source: WeightSource | null;
  /** Milliseconds spent in each scale-up step done so far. */
  stepsMs: Partial<Record<ScaleStep, number>>;
  bytesByTier: Record<WeightTier, number>;
  createdAt: number;
  servingAt: number | null;
  error: string | null;
}

export function noBytes(): Record<WeightTier, number> {
  return { r2: 0, staged: 0, fork: 0 };
}

/** A deployment's scaling bounds and its current target, per role. */
export interface DeploymentScaling {
  min: RoleCounts;
  max: RoleCounts;
  target: RoleCounts;
  /** When the target last changed (epoch ms). */
  scaledAt: number;
  /** Latency objectives the autoscaler holds the deployment to (absent in older records). */
  slo?: SloTargets;
}

/**
 * A deployment's latency objectives, per task as its instance measures it: time to first token
 * (from the task's acceptance on the instance) and time per output token after the first.
 */
export interface SloTargets {
  ttftMs: number;
  tpotMs: number;
}

/**
 * Defaults for interactive chat: a first token within 2 s, then at least 5 tokens/s per
 * sequence (DeepFlow reports engine gains at a 50 ms TPOT SLO on NPUs; a CPU-bound local engine
 * gets a looser default).
 */
export const DEFAULT_SLO: SloTargets = { ttftMs: 2_000, tpotMs: 200 };

/** Largest SLO targets a deployment may set. */
export const MAX_SLO_TTFT_MS = 600_000;
export const MAX_SLO_TPOT_MS = 60_000;

/** Most instances per role a deployment may have. */
export const MAX_INSTANCES_PER_ROLE = 128;
