/**
 * Models and their deployments as the ClusterManager records them and the API shows them
 * (DeepFlow's TE groups). Types, and the value lists the API validates against.
 */
import type { KvCacheRequest } from "../engine/kv-policy/spec.ts";
import type { PdProfile } from "../serving/pd-profile.ts";
import type { DeploymentScaling, RoleCounts, SloTargets } from "./instances.ts";

export interface ModelSummary {
  architecture: string;
  numParameters: number;
  contextLength: number;
  vocabSize: number;
  numExperts: number;
  numExpertsPerTok: number;
  /**
   * Bytes one NPU needs to serve the model colocated (KV for one full-length sequence). Above the
   * NPU budget only moe-attention deployments serve it. Absent in records made before.
   */
  memoryNeededBytes?: number;
}

export const DEPLOYMENT_MODES = ["colocated", "pd", "moe-attention"] as const;
export type DeploymentMode = (typeof DEPLOYMENT_MODES)[number];
/**
 * "deepflow" is Algorithm 1 (PD-aware group step, cache-aware instance step); the others are its
 * baselines (round-robin, least-loaded) and ablations (locality-only: longest cached prefix
 * whatever the load, no PD step; pd-aware-only: the PD step, then least-loaded).
 */
export const SCHEDULER_POLICIES = [
  "deepflow",
  "round-robin",
  "least-loaded",
  "locality-only",
  "pd-aware-only",
] as const;
export type SchedulerPolicy = (typeof SCHEDULER_POLICIES)[number];

export interface DeploymentInstances {
  colocated: string[];
  prefill: string[];
  decode: string[];
  /**
   * moe-attention: the instance (one, made of A attention Npus `npuName(id, a)` and E Expert DOs
   * `expertName(id, j)`). Absent in records made before the mode existed.
   */
  attention?: string[];
}

/**
 * The shape of a moe-attention instance. Its live expert map is held by attention rank 0 (GET
 * /api/deployments/:id/experts).
 */
export interface MoeLayout {
  numAttention: number;
  numExperts: number;
}

export interface DeploymentRecord {
  id: string;
  object: "deployment";
  model: string;
  /** Generation of the model's weights the instances serve. */
  generation: number;
  mode: DeploymentMode;
  scheduler: SchedulerPolicy;
  status: "active" | "deleted";
  createdAt: number;
  /** The serving (announced) instances of each role: what the JobExecutors place tasks on. */
  instances: DeploymentInstances;
  scaling: DeploymentScaling;
  /** The KV-cache policy fields its requests get by default (absent: dense). */
  kvCache?: KvCacheRequest | null;
  /** moe-attention only. */
  moe?: MoeLayout;
}

export interface DeploymentSpec {
  id: string;
  model: string;
  mode: DeploymentMode;
  scheduler: SchedulerPolicy;
  counts: RoleCounts;
  /** Scaling bounds (default: `counts` both ways, a fixed-size deployment). */
  min?: RoleCounts;
  max?: RoleCounts;
  /** Latency objectives for the autoscaler (default DEFAULT_SLO). */
  slo?: SloTargets;
  kvCache?: KvCacheRequest | null;
  moe?: MoeLayout;
}

export interface ModelRecord {
  name: string;
  r2Key: string;
  sizeBytes: number;
  ownedBy: string;
  createdAt: number;
  summary: ModelSummary;
  /** Bumped on every re-upload, so new weights get new instances. */
  generation: number;
  /** The measured colocated-vs-PD heatmap (`npm run profile:pd`), or null. */
  pdProfile: PdProfile | null;
  /** Active deployments of the current generation. */
  deployments: DeploymentRecord[];
  /**
   * When the ClusterManager read this record (monotonic in that object): of two copies, the one
   * with the higher revision is newer.
   */
  revision: number;
}

/** A model as the ClusterManager stores it: its record without the views added when read. */
export type StoredModel = Omit<ModelRecord, "deployments" | "revision">;

/** A model whose bytes are already in R2, as POST /v1/models hands it to the ClusterManager. */
export interface ModelRegistration {
  name: string;
  r2Key: string;
  sizeBytes: number;
  ownedBy: string;
  summary: ModelSummary;
  /** null: no default colocated deployment (the model does not fit one NPU). */
  defaultDeploymentId: string | null;
}
