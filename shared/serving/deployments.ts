/** A new deployment's record, built from its spec (the ClusterManager stores and scales it). */
import { instanceId } from "../protocol/names.ts";
import type { DeploymentRecord, DeploymentSpec } from "../types/deployments.ts";
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
