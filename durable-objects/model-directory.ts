/**
 * The model records a JobExecutor serves, kept in memory so that admitting a request costs no
 * ClusterManager call. The ClusterManager pushes every change of a model or of its deployments
 * to every JobExecutor shard before it answers the change (`JobExecutor.modelChanged`); a miss
 * (a new shard, a restart) asks the ClusterManager. An entry is also refreshed after
 * MAX_AGE_MS, which bounds how stale a shard can be if a push was lost.
 */
import type { Result } from "../shared/errors.ts";
import { CLUSTER_MANAGER_NAME } from "../shared/protocol/names.ts";
import type { DeploymentRecord, ModelRecord } from "../shared/types/deployments.ts";
import type { ScalableRole } from "../shared/types/instances.ts";
import type { Env } from "./env.ts";

/**
 * The deployment to scale from zero when none of `ds` has a serving instance of every role it
 * needs (the first of them), else null.
 */
export function idleDeployment(ds: readonly DeploymentRecord[]): DeploymentRecord | null {
  const serves = (d: DeploymentRecord) =>
    d.mode === "pd"
      ? d.instances.prefill.length > 0 && d.instances.decode.length > 0
      : d.mode === "moe-attention"
        ? (d.instances.attention?.length ?? 0) > 0
        : d.instances.colocated.length > 0;
  return ds.length > 0 && !ds.some(serves) ? (ds[0] as DeploymentRecord) : null;
}

const MAX_AGE_MS = 60_000;

export class ModelDirectory {
  readonly #models = new Map<string, { record: ModelRecord | null; at: number }>();

  constructor(private readonly env: Env) {}

  #cluster() {
    return this.env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);
  }

  /** The model's record (null: no such model). */
  async get(name: string): Promise<ModelRecord | null> {
    const now = Date.now();
    const hit = this.#models.get(name);
    if (hit && now - hit.at < MAX_AGE_MS) return hit.record;
    const record = await this.#cluster().getModel({ name });
    this.put(name, record);
    return this.#models.get(name)?.record ?? null;
  }

  /**
   * Keeps `record` unless a newer copy is already here (a push that arrived while a miss was
   * being answered, or pushes out of order). Models are never removed, so a known record is not
   * replaced by "unknown".
   */
  put(name: string, record: ModelRecord | null): void {
    const have = this.#models.get(name)?.record;
    if (have && (!record || have.revision > record.revision)) return;
    this.#models.set(name, { record, at: Date.now() });
  }

  /**
   * Scales a deployment from zero and waits until it serves; the ClusterManager pushes the new
   * record to every shard (this one included) before it answers.
   */
  async scaleFromZero(
    d: DeploymentRecord,
    timeoutMs: number,
  ): Promise<Result<{ coldStartMs: number }>> {
    const roles: ScalableRole[] = d.mode === "pd" ? ["prefill", "decode"] : ["colocated"];
    const r = await this.#cluster().scaleFromZero({ id: d.id, roles, timeoutMs });
    if (!r.ok) return r;
    this.put(d.model, r.value.record);
    return { ok: true, value: { coldStartMs: r.value.coldStartMs } };
  }

  /**
   * Asks the ClusterManager to replace an instance of the model that failed under a task (its
   * deployment found in the model's record); nothing when no deployment has it.
   */
  async replace(model: string, instanceId: string): Promise<void> {
    const m = await this.get(model);
    const d = m?.deployments.find((x) =>
      [...x.instances.colocated, ...x.instances.prefill, ...x.instances.decode].includes(
        instanceId,
      ),
    );
    if (d) await this.#cluster().replaceInstance({ deploymentId: d.id, instanceId });
  }

  /** Any deployment's record (for the error a pin of another model's deployment gets). */
  deployment(id: string): Promise<DeploymentRecord | null> {
    return this.#cluster().getDeployment({ id });
  }
}
