/**
 * The ClusterManager's instances: DeepFlow's scale-up pipeline and the pre-warmed pool.
 *
 * Scale-up of one instance, each step timed into its status: reserve (lease a pooled Npu, whose
 * runtime is up, or name a fresh one), pre-load the runtime (instantiate the wasm kernels and
 * reserve the arena), load weights (from R2, the staged tier, or by NPU-fork from a serving peer
 * in a tree broadcast, scale-plan.ts), warm up (one token through the engine), announce (the
 * instance joins its deployment's record, which is pushed to every JobExecutor). Scale-in drains:
 * the instance leaves the record first (no new task is placed on it), its running tasks finish,
 * then it is unbound and goes back to the pool (or stops when the pool is full).
 *
 * The pool itself is warm-pool.ts; the instances' SQLite rows are instance-table.ts; the waiters
 * for a serving deployment are serving-waiters.ts; which instances to start or drain, their
 * sources, a reserved instance's status and a new target's record are the pure rules of
 * shared/serving/scale-plan.ts.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { instanceId, npuName } from "../shared/protocol/names.ts";
import {
  forkSources,
  inCreationOrder,
  planSources,
  reservedInstance,
  roleMove,
  withTarget,
} from "../shared/serving/scale-plan.ts";
import type { DeploymentRecord } from "../shared/types/deployments.ts";
import {
  type InstanceStatus,
  type LoadPath,
  type RoleCounts,
  SCALABLE_ROLES,
  type ScalableRole,
  STARTING_STATES,
  type WeightSource,
} from "../shared/types/instances.ts";
import type { Env } from "./env.ts";
import { InstanceTable } from "./instance-table.ts";
import { ServingWaiters } from "./serving-waiters.ts";
import { WarmPool } from "./warm-pool.ts";

const ROLE_TAG: Record<ScalableRole, string> = { colocated: "c", prefill: "p", decode: "d" };

export interface FleetHost {
  env: Env;
  ctx: DurableObjectState;
  log: Logger;
  deployment(id: string): DeploymentRecord | null;
  put(d: DeploymentRecord): void;
  /** Pushes the model's record to the JobExecutors (announce). */
  publish(model: string): Promise<unknown>;
  weights(model: string): { r2Key: string; generation: number } | null;
}

export class InstancePool {
  /** Deployments' waiters for a serving instance of every role they need. */
  readonly #waiters: ServingWaiters;
  /** Loads in flight, by instance id: resolve true once the weights are in memory. */
  readonly #loaded = new Map<string, Promise<boolean>>();
  readonly #table: InstanceTable;
  /** The pre-warmed pool the instances are leased from and go back to. */
  readonly warm: WarmPool;

  constructor(private readonly host: FleetHost) {
    this.#table = new InstanceTable(host.ctx);
    this.warm = new WarmPool(host, () => this.#table.next("pool"));
    this.#waiters = new ServingWaiters(
      (depId, need) => {
        const d = host.deployment(depId);
        return d !== null && SCALABLE_ROLES.every((r) => d.instances[r].length >= (need[r] ?? 0));
      },
      (depId) => this.starting(depId),
    );
  }

  #npu(id: string) {
    return this.host.env.NPU.getByName(npuName(id));
  }

  /** Every instance of a deployment that has not stopped (or every one when `all`), oldest first. */
  statuses(depId: string, all = false): InstanceStatus[] {
    return this.#table.statuses(depId, all);
  }

  /**
   * Moves every role of a deployment toward `target`: starts instances (eagerly, in the
   * background) or drains serving ones, newest first. Returns the ids started and draining.
   */
  scale(
    d: DeploymentRecord,
    target: RoleCounts,
    path: LoadPath = "auto",
    verify = false,
  ): { started: string[]; draining: string[] } {
    const started: string[] = [];
    const draining: string[] = [];
    const live = this.statuses(d.id);
    for (const role of SCALABLE_ROLES) {
      const move = roleMove(live, role, target[role]);
      if (move.start > 0) started.push(...this.#add(d, role, move.start, path, verify));
      for (const s of move.drain) {
        draining.push(s.id);
        this.host.ctx.waitUntil(this.#drain(s));
      }
    }
    this.host.put(withTarget(this.host.deployment(d.id) ?? d, target, Date.now()));
    return { started, draining };
  }

  /**
   * Replaces an instance that failed under a task: one more of its role starts (a pooled Npu
   * when the pool has one, like any start) and the failed one leaves the record and is
   * released; the target is unchanged. Null when it is not serving (replaced already, gone).
   */
  replace(d: DeploymentRecord, instanceId: string): { started: string[] } | null {
    const s = this.statuses(d.id).find((x) => x.id === instanceId);
    if (s?.state !== "serving") return null;
    const started = this.#add(d, s.role, 1, "auto", false);
    this.host.ctx.waitUntil(this.#drain(s));
    return { started };
  }

  #add(d: DeploymentRecord, role: ScalableRole, count: number, path: LoadPath, verify: boolean) {
    const w = this.host.weights(d.model);
    if (!w) return [];
    const now = Date.now();
    const ids: { id: string; fromPool: boolean; reserveMs: number }[] = [];
    for (let i = 0; i < count; i++) {
      const t0 = Date.now();
      const leased = path === "auto" || path === "pool-fork" ? this.warm.lease() : null;
      const id =
        leased ?? instanceId(`${d.id}_${ROLE_TAG[role]}`, this.#table.next(`inst/${d.id}`));
      ids.push({ id, fromPool: leased !== null, reserveMs: Date.now() - t0 });
    }
    const starts: Promise<void>[] = [];
    const plan = planSources(
      path,
      forkSources(this.#table.serving(), (id) => this.host.deployment(id), d),
      ids.map((x) => x.id),
      path === "staged",
    );
    ids.forEach((x, i) => {
      const p = plan[i] as { source: WeightSource; after: string | null };
      const s = reservedInstance(x, d.id, role, p.source, now);
      this.#table.save(s);
      let markLoaded = (_: boolean) => {};
      this.#loaded.set(x.id, new Promise<boolean>((r) => (markLoaded = r)));
      starts.push(this.#start(s, d, w, p.after, verify, markLoaded));
    });
    for (const p of starts) this.host.ctx.waitUntil(p);
    // the pool refills once this scale-up's loads are done (topping up what was leased, and
    // growing the pooled arenas if a load asked for a larger one), so pre-loads (wasm
    // instantiated, arenas committed) never compete with the loads of the scale-up
    this.host.ctx.waitUntil(Promise.all(starts).then(() => this.warm.refill()));
    this.host.log.info("deployment.scaling_out", { deploymentId: d.id, role, count, path });
    return ids.map((x) => x.id);
  }

  async #start(
    s: InstanceStatus,
    d: DeploymentRecord,
    w: { r2Key: string; generation: number },
    after: string | null,
    verify: boolean,
    markLoaded: (ok: boolean) => void,
  ): Promise<void> {
    const npu = this.#npu(s.id);
    const step = (state: InstanceStatus["state"]) => {
      s.state = state;
      this.#table.save(s);
    };
    try {
      step("preloading");
      const t1 = Date.now();
      if (!s.fromPool) await npu.preload({ reserveBytes: 0, pooled: false });
      s.stepsMs.preload = Date.now() - t1;
      // a fork from a peer that is itself loading starts once that peer has its weights
      if (after !== null && !(await this.#loaded.get(after))) s.source = { tier: "r2" };
      step("loading");
      const t2 = Date.now();
      const source = s.source as WeightSource;
      const load = { model: d.model, generation: w.generation, r2Key: w.r2Key, verify };
      let r = await npu.loadWeights({ ...load, source });
      if (!r.ok && source.tier === "fork") {
        // the peer stopped serving (drained, restarted) before the copy: load from R2 instead
        this.host.log.warn("instance.fork_failed", { instanceId: s.id, error: r.error.message });
        s.source = { tier: "r2" };
        r = await npu.loadWeights({ ...load, source: s.source });
      }
      if (!r.ok) throw new Error(r.error.message);
      s.stepsMs.preload += r.value.preloadMs;
      s.stepsMs.load = Date.now() - t2 - r.value.preloadMs;
      s.bytesByTier = r.value.bytesByTier;
      this.warm.reserveBytes = Math.max(this.warm.reserveBytes, r.value.arenaBytes);
      if (verify)
        (s as InstanceStatus & { weightsDigest?: string }).weightsDigest = r.value.weightsDigest;
      markLoaded(true);
      step("warming");
      const t3 = Date.now();
      const warm = await npu.warmUp();
      if (!warm.ok) throw new Error(warm.error.message);
      s.stepsMs.warmup = Date.now() - t3;
      const t4 = Date.now();
      const cur = this.host.deployment(d.id);
      if (cur?.status !== "active" || this.#table.statusOf(s.id)?.state !== "warming") {
        // deleted or scaled in while it started: it never serves
        await this.#release(s, "stopped");
        return;
      }
      // the serving list keeps the instances' creation order, whatever order they loaded in
      const order = this.statuses(d.id, true).map((x) => x.id);
      const ids = inCreationOrder([...cur.instances[s.role], s.id], order);
      this.host.put({ ...cur, instances: { ...cur.instances, [s.role]: ids } });
      s.servingAt = Date.now();
      step("serving");
      await this.host.publish(d.model);
      s.stepsMs.announce = Date.now() - t4;
      this.#table.save(s);
      this.#waiters.wake();
      this.host.log.info("instance.serving", {
        instanceId: s.id,
        deploymentId: d.id,
        ...s.stepsMs,
      });
    } catch (e) {
      markLoaded(false);
      s.error = (e as Error).message;
      this.host.log.warn("instance.failed", { instanceId: s.id, ...errorFields(e) });
      await this.#release(s, "failed").catch(() => {});
      this.#waiters.wake();
    }
  }

  /** Leaves the record (no new tasks), lets running tasks finish, unbinds. */
  async #drain(s: InstanceStatus): Promise<void> {
    const t0 = Date.now();
    s.state = "draining";
    this.#table.save(s);
    const cur = this.host.deployment(s.deploymentId);
    if (cur) {
      const ids = cur.instances[s.role].filter((x) => x !== s.id);
      this.host.put({ ...cur, instances: { ...cur.instances, [s.role]: ids } });
      await this.host.publish(cur.model);
    }
    try {
      await this.#npu(s.id).drain();
    } catch (e) {
      this.host.log.warn("instance.drain_failed", { instanceId: s.id, ...errorFields(e) });
    }
    await this.#release(s, "stopped");
    this.host.log.info("instance.drained", { instanceId: s.id, durationMs: Date.now() - t0 });
  }

  /** Unbinds an instance's Npu; it rejoins the pool if the pool has room. */
  async #release(s: InstanceStatus, state: "stopped" | "failed"): Promise<void> {
    s.state = state;
    this.#table.save(s);
    await this.warm.giveBack(s.id, state === "stopped");
  }

  /** Stops every instance of a deleted deployment (draining the serving ones). */
  retire(depId: string): void {
    for (const s of this.statuses(depId)) {
      if (s.state === "serving") this.host.ctx.waitUntil(this.#drain(s));
      else if (STARTING_STATES.has(s.state)) {
        s.state = "draining"; // #start sees it and stops
        this.#table.save(s);
      }
    }
  }

  // --- waiting for a serving instance (serving-waiters.ts)

  /** Whether any instance of the deployment is still starting. */
  starting(depId: string): boolean {
    return this.statuses(depId).some((s) => STARTING_STATES.has(s.state));
  }

  /** See ServingWaiters.when: true once the deployment serves `need`, false on timeout or failure. */
  whenServing(depId: string, need: Partial<RoleCounts>, timeoutMs: number): Promise<boolean> {
    return this.#waiters.when(depId, need, timeoutMs);
  }
}
