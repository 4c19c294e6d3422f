/**
 * The records the ClusterManager stores: a (re-)registered model's, a new deployment's, and the
 * spec of a model's default colocated deployment. Pure.
 */
import { instanceId } from "../protocol/names.ts";
import type {
  DeploymentRecord,
  DeploymentSpec,
  ModelRegistration,
  StoredModel,
} from "../types/deployments.ts";
import { DEFAULT_SLO } from "../types/instances.ts";

/**
 * An active deployment of `spec.model` at its current `generation`, with no serving instance
 * yet (instances join `instances` once serving) and `spec.counts` as its scaling target.
 */
export function newDeployment(
  spec: DeploymentSpec,
  generation: number,
  now: number,
): DeploymentRecord {
  return {
    id: spec.id,
    object: "deployment",
    model: spec.model,
    generation,
    mode: spec.mode,
    scheduler: spec.scheduler,
    kvCache: spec.kvCache ?? null,
    status: "active",
    createdAt: now,
    instances: {
      colocated: [],
      prefill: [],
      decode: [],
      // a moe-attention instance is set up whole (its ranks) when it is created, not pooled
      attention: spec.moe ? [instanceId(`${spec.id}_ma`, 0)] : [],
    },
    scaling: {
      min: spec.min ?? spec.counts,
      max: spec.max ?? spec.counts,
      target: spec.counts,
      scaledAt: now,
      slo: spec.slo ?? DEFAULT_SLO,
    },
    ...(spec.moe ? { moe: spec.moe } : {}),
  };
}

/**
 * A registered model's stored record; replacing `prev` bumps the generation (new instances for
 * new weights) and keeps its creation time.
 */
export function nextModel(
  prev: StoredModel | null,
  m: ModelRegistration,
  now: number,
): StoredModel {
  return {
    name: m.name,
    r2Key: m.r2Key,
    sizeBytes: m.sizeBytes,
    ownedBy: m.ownedBy,
    createdAt: prev?.createdAt ?? now,
    summary: m.summary,
    generation: prev ? prev.generation + 1 : 0,
    pdProfile: null,
  };
}

/** A model's default deployment: one colocated instance, DeepFlow scheduling. */
export function defaultDeployment(id: string, model: string): DeploymentSpec {
  return {
    id,
    model,
    mode: "colocated",
    scheduler: "deepflow",
    counts: { colocated: 1, prefill: 0, decode: 0 },
  };
}
