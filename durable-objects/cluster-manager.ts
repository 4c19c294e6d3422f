/**
 * ClusterManager: the registry of models (GGUF objects in the R2 model registry) and of their
 * deployments (DeepFlow's TE groups: a colocated group, or a PD group of prefill and decode
 * instances). One object for the cluster; its SQLite state survives restarts (the tables are in
 * cluster-registry.ts). Its instances, their scale-up pipeline and the pre-warmed pool are in
 * instance-pool.ts; the autoscaler (autoscaler.ts) runs on its alarm; model-publisher.ts pushes a
 * model's record to the JobExecutors; the records it stores (a re-registered model's next
 * generation, a new or default deployment) are shared/serving/deployments.ts, and the checks on a
 * scale request (an active deployment, bounds, scale from zero's target) are
 * shared/serving/scale-requests.ts.
 */
import { DurableObject } from "cloudflare:workers";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { Logger, parseLogLevel } from "../shared/log.ts";
import { weightCacheName } from "../shared/protocol/names.ts";
import { defaultDeployment, newDeployment, nextModel } from "../shared/serving/deployments.ts";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import { activeDeployment, checkBounds, fromZeroTarget } from "../shared/serving/scale-requests.ts";
import type {
  DeploymentRecord,
  DeploymentSpec,
  ModelRecord,
  ModelRegistration,
  StoredModel,
} from "../shared/types/deployments.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type {
  InstanceStatus,
  LoadPath,
  RoleCounts,
  ScalableRole,
} from "../shared/types/instances.ts";
import { Autoscaler } from "./autoscaler.ts";
import { ClusterRegistry } from "./cluster-registry.ts";
import type { Env } from "./env.ts";
import { FaultSwitch } from "./faults.ts";
import { InstancePool } from "./instance-pool.ts";
import { ModelPublisher } from "./model-publisher.ts";

/** Longest POST /api/deployments waits for its initial instances to serve. */
const CREATE_TIMEOUT_MS = 60_000;

export class ClusterManager extends DurableObject<Env> {
  private readonly log: Logger;
  readonly #registry: ClusterRegistry;
  readonly #faults: FaultSwitch;
  readonly #publisher: ModelPublisher;
  readonly pool: InstancePool;
  readonly autoscaler: Autoscaler;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger({ do: "ClusterManager" }, parseLogLevel(env.LOG_LEVEL));
    this.#faults = new FaultSwitch(ctx, env, this.log);
    this.#registry = new ClusterRegistry(ctx);
    this.#publisher = new ModelPublisher(env, this.log, this.#registry);
    this.pool = new InstancePool({
      env,
      ctx,
      log: this.log,
      deployment: (id) => this.#registry.deployment(id),
      put: (d) => this.#registry.putDeployment(d),
      publish: (model) => this.#publisher.publish(model),
      weights: (model) => this.#registry.model(model),
    });
    this.autoscaler = new Autoscaler({
      ctx,
      env,
      log: this.log,
      pool: this.pool,
      deployments: () => this.#registry.active(),
    });
  }

  /**
   * Registers (or replaces) a model whose bytes are already in R2 and gives it a colocated
   * deployment. Replacing a model bumps its generation: earlier deployments are retired and new
   * instance ids are used, so no NPU keeps serving old weights.
   */
  async registerModel(m: ModelRegistration): Promise<ModelRecord> {
    const record = nextModel(this.#registry.model(m.name), m, Date.now());
    const retired = this.#registry.deploymentsOf(m.name);
    this.ctx.storage.transactionSync(() => {
      this.#registry.putModel(record);
      for (const d of this.#registry.deploymentsOf(m.name))
        this.#registry.putDeployment({ ...d, status: "deleted" });
    });
    for (const d of retired) this.pool.retire(d.id);
    if (m.defaultDeploymentId)
      this.#createDeployment(defaultDeployment(m.defaultDeploymentId, m.name));
    this.log.info("model.registered", {
      model: m.name,
      sizeBytes: m.sizeBytes,
      generation: record.generation,
    });
    return this.#publisher.publish(m.name) as Promise<ModelRecord>;
  }

  /** A drill's fault (POST /api/faults): the next model read throws, or the object is reset. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.#faults.inject(q.fault);
  }

  async getModel(q: { name: string }): Promise<ModelRecord | null> {
    this.#faults.check("ClusterManager.getModel");
    const s = this.#registry.model(q.name);
    return s ? this.#registry.withDeployments(s) : null;
  }

  async listModels(): Promise<ModelRecord[]> {
    this.#faults.check("ClusterManager.listModels");
    return this.#registry.models().map((s) => this.#registry.withDeployments(s));
  }

  /** Stores a model's PD profile (measured for its current weights); false for an unknown model. */
  async setPdProfile(q: { name: string; profile: PdProfile }): Promise<boolean> {
    const s = this.#registry.model(q.name);
    if (!s) return false;
    const next: StoredModel = { ...s, pdProfile: q.profile };
    this.#registry.putModel(next);
    this.log.info("model.profiled", {
      model: q.name,
      numCells: q.profile.inputBuckets.length * q.profile.outputBuckets.length,
    });
    await this.#publisher.publish(q.name);
    return true;
  }

  /**
   * Creates a deployment of a registered model and answers once its initial instances serve (or
   * failed to start, or CREATE_TIMEOUT_MS passed); null when the model is unknown.
   */
  async addDeployment(spec: DeploymentSpec): Promise<DeploymentRecord | null> {
    if (!this.#registry.model(spec.model)) return null;
    const d = this.#createDeployment(spec);
    await this.#publisher.publish(spec.model);
    await this.pool.whenServing(d.id, spec.counts, CREATE_TIMEOUT_MS);
    return this.#registry.deployment(d.id);
  }

  async getDeployment(q: { id: string }): Promise<DeploymentRecord | null> {
    return this.#registry.deployment(q.id);
  }

  /** A deployment with every instance's state and scale-up step timings. */
  async deploymentStatus(q: {
    id: string;
  }): Promise<{ record: DeploymentRecord; instances: InstanceStatus[] } | null> {
    const record = this.#registry.deployment(q.id);
    // live instances, and failed ones (with their error) until the deployment is retired
    const instances = this.pool.statuses(q.id, true).filter((s) => s.state !== "stopped");
    return record ? { record, instances } : null;
  }

  async listDeployments(): Promise<DeploymentRecord[]> {
    return this.#registry.active();
  }

  /** Retires a deployment: no new tasks are placed on it; running ones finish. */
  async deleteDeployment(q: { id: string }): Promise<DeploymentRecord | null> {
    const d = await this.getDeployment(q);
    if (!d || d.status === "deleted") return null;
    const out: DeploymentRecord = { ...d, status: "deleted" };
    this.#registry.putDeployment(out);
    this.pool.retire(d.id);
    this.log.info("deployment.deleted", { deploymentId: d.id, model: d.model });
    await this.#publisher.publish(d.model);
    return out;
  }

  // --- scaling

  /**
   * Sets a deployment's target by hand (admin): instances start eagerly or drain. A target
   * outside [min, max] per role is refused. `path` forces the tier loads use (benchmarks).
   */
  async scaleDeployment(q: {
    id: string;
    target: RoleCounts;
    path?: LoadPath;
    verify?: boolean;
    /** Answer once the target serves (or a start failed, or CREATE_TIMEOUT_MS passed). */
    wait?: boolean;
  }): Promise<Result<{ started: string[]; draining: string[] }>> {
    const active = activeDeployment(this.#registry.deployment(q.id), q.id, "id");
    if (!active.ok) return active;
    const d = active.value;
    const bounded = checkBounds(d, q.target);
    if (!bounded.ok) return bounded;
    const out = this.pool.scale(d, q.target, q.path ?? "auto", q.verify ?? false);
    this.autoscaler.arm();
    if (q.wait) await this.pool.whenServing(d.id, q.target, CREATE_TIMEOUT_MS);
    return { ok: true, value: out };
  }

  /**
   * A JobExecutor found the instance failed under a task (hung, lost, unreachable): it is
   * replaced (InstancePool.replace). Null when it no longer serves (replaced already).
   */
  async replaceInstance(q: {
    deploymentId: string;
    instanceId: string;
  }): Promise<{ started: string[] } | null> {
    const d = this.#registry.deployment(q.deploymentId);
    if (d?.status !== "active") return null;
    const r = this.pool.replace(d, q.instanceId);
    if (r) this.log.warn("instance.replacing", { ...q, started: r.started });
    return r;
  }

  /**
   * Scale from zero: a request found no serving instance of `roles`. Roles at zero go to one
   * instance (503 when the deployment's maximum is zero), then this waits until the deployment
   * serves (503 after `timeoutMs`, or when every start failed). Returns the wait.
   */
  async scaleFromZero(q: {
    id: string;
    roles: ScalableRole[];
    timeoutMs: number;
  }): Promise<Result<{ coldStartMs: number; record: ModelRecord }>> {
    const t0 = Date.now();
    const active = activeDeployment(this.#registry.deployment(q.id), q.id, "deployment");
    if (!active.ok) return active;
    const d = active.value;
    const live = this.pool.statuses(d.id).filter((s) => s.state !== "draining");
    const target = fromZeroTarget(
      d,
      q.roles,
      (r) => d.instances[r].length > 0 || live.some((s) => s.role === r),
    );
    if (!target.ok) return target;
    this.pool.scale(d, target.value);
    this.autoscaler.arm();
    const need = Object.fromEntries(q.roles.map((r) => [r, 1]));
    if (!(await this.pool.whenServing(d.id, need, q.timeoutMs))) {
      const msg = `Deployment ${d.id} has no serving instance yet (a cold start is under way or failed); retry shortly.`;
      return failure(errorInfo("overloaded", msg, null, "cold_start_pending"));
    }
    // the record goes back with the answer: the caller need not wait for the push
    const record = (await this.getModel({ name: d.model })) as ModelRecord;
    return { ok: true, value: { coldStartMs: Date.now() - t0, record } };
  }

  /** Stages a model's weights in its WeightCache (the tier between R2 and instance memory). */
  async stageWeights(q: { model: string }): Promise<{ sizeBytes: number } | null> {
    const s = this.#registry.model(q.model);
    if (!s) return null;
    const meta = await this.env.WEIGHT_CACHE.getByName(weightCacheName(s.name, s.generation)).stage(
      {
        r2Key: s.r2Key,
      },
    );
    return meta && { sizeBytes: meta.sizeBytes };
  }

  /** The pre-warmed pool: its Npus' instance ids and states (fills it first when asked). */
  async poolStatus(q: { fill?: boolean } = {}): Promise<{ id: string; state: string }[]> {
    if (q.fill) await this.pool.warm.refill();
    return this.pool.warm.list();
  }

  /** The autoscaler's tick (tests drive it through runDurableObjectAlarm). */
  override async alarm(): Promise<void> {
    await this.autoscaler.tick(Date.now());
  }

  #createDeployment(spec: DeploymentSpec): DeploymentRecord {
    const s = this.#registry.model(spec.model) as StoredModel;
    const record = newDeployment(spec, s.generation, Date.now());
    this.#registry.putDeployment(record);
    // instances load eagerly and join `instances` once serving
    this.pool.scale(record, spec.counts);
    this.autoscaler.arm();
    this.log.info("deployment.created", {
      deploymentId: spec.id,
      model: spec.model,
      mode: spec.mode,
      counts: spec.counts,
    });
    return record;
  }
}
