/**
 * The rules the ClusterManager checks a scale request against: a hand-set target must lie within
 * the deployment's [min, max] per role, and scale from zero raises each requested role that has
 * no live instance to one (refused when that role's maximum is zero); either needs an active
 * deployment. Pure.
 */
import { errorInfo, failure, type Result } from "../errors.ts";
import type { DeploymentRecord } from "../types/deployments.ts";
import { type RoleCounts, SCALABLE_ROLES, type ScalableRole } from "../types/instances.ts";

/** The deployment when it is active, else a not_found naming `param`. */
export function activeDeployment(
  d: DeploymentRecord | null,
  id: string,
  param: string,
): Result<DeploymentRecord> {
  if (d?.status === "active") return { ok: true, value: d };
  return failure(errorInfo("not_found", `No deployment ${id}.`, param, "deployment_not_found"));
}

/** `target` when every role lies within the deployment's bounds, else an invalid_request. */
export function checkBounds(d: DeploymentRecord, target: RoleCounts): Result<RoleCounts> {
  for (const r of SCALABLE_ROLES) {
    const n = target[r];
    if (n < d.scaling.min[r] || n > d.scaling.max[r]) {
      const msg = `${r}: ${n} is outside this deployment's bounds [${d.scaling.min[r]}, ${d.scaling.max[r]}]`;
      return failure(errorInfo("invalid_request", msg, r));
    }
  }
  return { ok: true, value: target };
}

/**
 * Scale from zero's target: the deployment's target with each of `roles` that has no live
 * instance (`live(role)` false) raised to at least one; overloaded when such a role's maximum
 * is zero.
 */
export function fromZeroTarget(
  d: DeploymentRecord,
  roles: readonly ScalableRole[],
  live: (role: ScalableRole) => boolean,
): Result<RoleCounts> {
  const target = { ...d.scaling.target };
  for (const r of roles) {
    if (live(r)) continue;
    if (d.scaling.max[r] === 0) {
      const msg = `Deployment ${d.id} is at its maximum of 0 ${r} instances; raise max_instances or retry later.`;
      return failure(errorInfo("overloaded", msg, null, "deployment_at_max"));
    }
    target[r] = Math.max(target[r], 1);
  }
  return { ok: true, value: target };
}
