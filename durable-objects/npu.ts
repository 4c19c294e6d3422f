/**
 * Npu: one NPU of an instance. Holds a model's weights and KV cache in its kernel arena (the
 * per-NPU memory budget), runs the engine loop with continuous batching, and streams each task's
 * tokens back as NDJSON GenerateEvents while they are produced. Tasks arrive tokenised (the
 * JobExecutor tokenises once). The maths and policies are in shared/; this shell uses the
 * Engine's public methods, owns the RPC surface, and delegates loading (npu-loader.ts), task
 * admission (task-admission.ts), the engine loop (engine-loop.ts), task streams and progress
 * reports (task-streams.ts), the PD handoff of a prompt's KV (kv-handoff.ts), the fabric regions
 * peers read (fabric-host.ts) and the moe-attention attention rank (npu-attention.ts).
 */
import { DurableObject } from "cloudflare:workers";
import type { StepReport } from "../shared/engine/engine.ts";
import type { Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import type { FabricStats, RegionKind, RegionMeta } from "../shared/fabric/regions.ts";
import { Logger, parseLogLevel } from "../shared/log.ts";
import type { WeightSelection } from "../shared/model/weights.ts";
import type { AttentionLoad } from "../shared/moe/attention-group.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";
import type { GenerateTask, Prefilled } from "../shared/protocol/messages.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import { estimatedStepMs } from "../shared/serving/step-cost.ts";
import type { NpuHealth } from "../shared/serving/watchdog.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type { LoadReport } from "../shared/types/instances.ts";
import { ContextPins } from "./context-pins.ts";
import { EngineLoop } from "./engine-loop.ts";
import { type Env, getConfig } from "./env.ts";
import type { ExpertsView } from "./expert-balancer.ts";
import { FabricHost, type RegionData } from "./fabric-host.ts";
import { KvHandoff } from "./kv-handoff.ts";
import type { MoeSetup } from "./moe-group-setup.ts";
import { NpuAttention } from "./npu-attention.ts";
import { NpuLifecycle } from "./npu-lifecycle.ts";
import { type Loaded, ModelSlot } from "./npu-loader.ts";
import { NpuRecovery } from "./npu-recovery.ts";
import { type LoadWeightsRequest, NpuResidency } from "./npu-residency.ts";
import { type NpuStats, npuStats } from "./npu-stats.ts";
import { type GenerateAccepted, type NpuTask, TaskAdmission } from "./task-admission.ts";
import { TaskStreams } from "./task-streams.ts";
import type { ForkImage } from "./weight-tiers.ts";

/** The reason a failed step gives its tasks (the error's message). */
function stepFailure(e: unknown): string {
  return `engine failure: ${e instanceof Error ? e.message : String(e)}`;
}

export class Npu extends DurableObject<Env> {
  private readonly log: Logger;
  private readonly slot: ModelSlot;
  /** KV blocks pinned for explicit context caches. */
  private readonly pins = new ContextPins();
  private readonly streams: TaskStreams;
  private readonly fabric: FabricHost;
  private readonly handoff: KvHandoff;
  private readonly loop: EngineLoop;
  private readonly lifecycle = new NpuLifecycle();
  /** The moe-attention rank role, when this Npu is one. */
  private readonly attention: NpuAttention;
  private readonly admission: TaskAdmission;
  private readonly residency: NpuResidency;
  private readonly recovery: NpuRecovery;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    const name = ctx.id.name ?? "";
    this.log = new Logger({ do: "Npu", name }, parseLogLevel(env.LOG_LEVEL));
    this.slot = new ModelSlot(env, this.log);
    this.fabric = new FabricHost(ctx.storage);
    this.streams = new TaskStreams(
      env,
      ctx,
      this.log,
      () => this.loaded?.instance.engine,
      () => ({ numPreemptions: this.loop.numPreemptions, fabric: this.fabric.counters() }),
    );
    this.handoff = new KvHandoff({
      name,
      env,
      ctx,
      log: this.log,
      fabric: this.fabric,
      reports: this.streams,
      kick: () => this.#kick(),
    });
    this.loop = new EngineLoop({
      ctx,
      log: this.log,
      engine: () => this.attention.leader ?? this.loaded?.instance.engine,
      onStep: (report, startedAt, endedAt) => this.#onStep(report, startedAt, endedAt),
      onFailure: (e) => {
        this.lifecycle.failAll();
        this.streams.failAll(stepFailure(e));
        this.handoff.failAll();
      },
      sliceMs: getConfig(env).npuSliceMs,
      stepCostMs: (r) => {
        const config = this.loaded?.instance.config;
        return config ? estimatedStepMs(config, r) : 0;
      },
      continueLater: () => ctx.waitUntil(ctx.storage.setAlarm(Date.now())),
    });
    this.residency = new NpuResidency({
      storage: ctx.storage,
      slot: this.slot,
      lifecycle: this.lifecycle,
      pins: this.pins,
      handoff: this.handoff,
      loop: this.loop,
      busy: () => this.streams.size > 0 || this.admission.starting.size > 0,
    });
    this.admission = new TaskAdmission({
      slot: this.slot,
      streams: this.streams,
      handoff: this.handoff,
      lifecycle: this.lifecycle,
      log: this.log,
      kick: () => this.#kick(),
      scheduleAlarm: () => this.residency.scheduleAlarm(),
    });
    this.streams.onEnded = () => this.lifecycle.changed();
    this.attention = new NpuAttention({
      env,
      slot: this.slot,
      log: this.log,
      kickLoop: () => this.loop.kick(),
      waitUntil: (p) => ctx.waitUntil(p),
      onStep: (report, t0, t1) => this.#onStep(report, t0, t1),
      // the leader drives this rank's steps: each is progress for the JobExecutor's watchdog
      onProgress: () => this.loop.numSteps++,
      onStepError: (e) => this.streams.failAll(stepFailure(e)),
    });
    this.recovery = new NpuRecovery({
      env,
      log: this.log,
      slot: this.slot,
      loop: this.loop,
      streams: this.streams,
      handoff: this.handoff,
      pins: this.pins,
      admission: this.admission,
      attention: this.attention,
      abort: (reason) => ctx.abort(reason),
    });
  }

  #onStep(report: StepReport, startedAt: number, endedAt: number): void {
    this.streams.markStarted(report.scheduledSeqIds, startedAt);
    for (const o of report.outputs) {
      if (this.lifecycle.onOutput(o)) continue;
      if (this.handoff.onOutput(o)) continue;
      this.streams.onOutput(o, endedAt);
    }
  }

  /** New work: the engine loop runs (an attention rank of moe-attention asks its leader). */
  #kick(): void {
    if (this.attention.role) this.attention.role.kick();
    else this.loop.kick();
  }

  // --- moe-attention: this Npu as an attention rank (npu-attention.ts)

  /** Joins a moe-attention instance as attention rank `rank` and loads the model without experts. */
  async attentionConfigure(a: {
    spec: MoeGroupSpec;
    rank: number;
  }): Promise<Result<MoeRankLoaded>> {
    return this.attention.configure(a);
  }

  /** As rank 0 of a moe-attention instance: sets up every rank (POST /api/deployments). */
  async moeSetup(s: MoeSetup): Promise<Result<{ spec: MoeGroupSpec; loaded: MoeRankLoaded[] }>> {
    return this.attention.setup(s);
  }

  /** An E2A part from an expert rank. */
  async moeDeliver(msg: CommMessage): Promise<void> {
    this.attention.deliver(msg);
  }

  /** The leader asks this rank for its part of a group step. */
  async attentionStep(a: {
    map: ExpertMap | null;
  }): Promise<{ hasWork: boolean; load: AttentionLoad | null }> {
    return this.attention.step(a);
  }

  /** EPLB view of this moe-attention instance (rank 0), with its expert-rank failovers. */
  async moeExperts(): Promise<ExpertsView | null> {
    return this.attention.experts();
  }

  /** Rank 0 failed an expert rank over: switch to `map` now (mid-step too), or fail with `error`. */
  async attentionFailover(change: { map: ExpertMap } | { error: string }): Promise<void> {
    this.attention.failover(change);
  }

  /** Rebalances this moe-attention instance's experts now (rank 0). */
  async moeRebalance(): Promise<{
    fromVersion: number;
    toVersion: number;
    imbalance: number;
  } | null> {
    return this.attention.rebalance();
  }

  /** A rank of the leader's group got work. */
  async attentionKick(a: { rank: number }): Promise<void> {
    this.attention.markBusy(a.rank);
  }

  /** Comm counters per (layer, step) of this attention rank. */
  async moeComm(): Promise<StepComm[]> {
    return this.attention.comm();
  }

  /** The loaded model, if any. */
  private get loaded(): Loaded | null {
    return this.slot.current;
  }

  /** Loads `model` from the R2 registry unless it is loaded already. */
  async load(q: { model: string; r2Key: string }): Promise<Result<{ model: string }>> {
    const r = await this.slot.ensure(q.model, q.r2Key);
    return r.ok ? { ok: true, value: { model: r.value.model } } : r;
  }

  // --- scaling (the ClusterManager drives these steps; npu-residency.ts)

  /** Pre-loads the runtime; `pooled`: the Npu then waits in the pool, kept resident by its alarm. */
  async preload(q: { reserveBytes: number; pooled: boolean }): Promise<{ preloadMs: number }> {
    return this.residency.preload(q);
  }

  /** Loads a model's weights from a tier into an arena sized to the model. */
  async loadWeights(q: LoadWeightsRequest): Promise<Result<LoadReport>> {
    return this.residency.loadWeights(q);
  }

  /** Post-load warm-up: one greedy token through the engine loop. */
  async warmUp(): Promise<Result<{ warmupMs: number }>> {
    return this.residency.warmUp();
  }

  /** Resolves once no task runs or starts here (the ClusterManager stopped placing them). */
  async drain(): Promise<{ drainMs: number }> {
    return this.residency.drain();
  }

  /** Unbinds the model; with `pooled`, goes back to the pool with a fresh runtime. */
  async unbind(q: { pooled: boolean; reserveBytes: number }): Promise<{ unbound: boolean }> {
    return this.residency.unbind(q);
  }

  /** What a new instance forks from this one (npu-loader.ts), or null unless it serves `model`. */
  async forkImage(q: { model: string; weights: WeightSelection }): Promise<ForkImage | null> {
    return this.slot.forkImage(q.model, q.weights);
  }

  async stats(): Promise<NpuStats> {
    const { loaded, loop, streams, lifecycle } = this;
    return npuStats({ loaded, loop, streams, lifecycle });
  }

  /**
   * Starts a task and returns its event stream at once (task-admission.ts); failures are values.
   * Rank 0 of a moe-attention instance may hand it to another attention rank.
   */
  async generate(task: NpuTask): Promise<Result<GenerateAccepted>> {
    return this.attention.routeElsewhere(task) ?? this.admission.generate(task);
  }

  /** Prefill task of a PD job: returns where the decode side pulls the prompt's KV from. */
  async prefill(task: GenerateTask & { r2Key: string }): Promise<Result<Prefilled>> {
    return this.admission.prefill(task);
  }

  /**
   * Explicit context cache: computes a prompt and pins its full KV blocks on this NPU until
   * `expiresAt` (or unpinPrefix), so requests that start with it reuse them through the prefix
   * cache. Pinned blocks live in memory: a restarted NPU has lost them, and requests then
   * recompute the prefix (their output is the same; only cached_tokens drops).
   */
  async pinPrefix(a: {
    cacheId: string;
    promptIds: number[];
    cacheSalt: string;
    model: string;
    r2Key: string;
    expiresAt: number;
  }): Promise<Result<{ numTokens: number; numPinnedTokens: number }>> {
    const loaded = await this.slot.ensure(a.model, a.r2Key);
    if (!loaded.ok) return loaded;
    const pinned = await this.pins.computeAndPin(loaded.value.instance, this.handoff, a);
    if (!pinned.ok) return pinned;
    const { numPinnedTokens } = pinned.value;
    await this.residency.scheduleAlarm();
    this.log.info("context_cache.pinned", {
      cacheId: a.cacheId,
      numTokens: a.promptIds.length,
      numPinnedTokens,
    });
    return { ok: true, value: { numTokens: a.promptIds.length, numPinnedTokens } };
  }

  async unpinPrefix(a: { cacheId: string }): Promise<{ unpinned: boolean }> {
    return { unpinned: this.pins.unpin(this.loaded?.instance.engine, a.cacheId) };
  }

  /**
   * The Npu's one alarm: continues the engine loop (its last invocation used its time slice),
   * expires pinned context caches and KV handoff regions no decode side ever pulled, and keeps a
   * pooled or bound Npu resident.
   */
  override async alarm(): Promise<void> {
    this.#kick();
    await this.residency.onAlarm(Date.now());
  }

  // --- the fabric (this NPU's regions, read and freed by peers)

  async fabricWrite(a: {
    regionId: string;
    kind: RegionKind;
    bytes: Uint8Array;
    seq?: number;
  }): Promise<RegionMeta> {
    return this.fabric.write(a);
  }

  async fabricRead(a: { regionId: string; minSeq?: number }): Promise<RegionData | null> {
    return this.fabric.read(a);
  }

  async fabricWait(a: { regionId: string; minSeq: number; timeoutMs: number }): Promise<boolean> {
    return this.fabric.wait(a);
  }

  async fabricFree(a: { regionId: string }): Promise<boolean> {
    return this.fabric.free(a);
  }

  async fabricStats(): Promise<{ counters: FabricStats; regions: RegionMeta[] }> {
    return { counters: this.fabric.counters(), regions: this.fabric.list() };
  }

  // --- health (the JobExecutor's watchdog) and fault injection (npu-recovery.ts)

  /** The engine loop's progress counter, whether it has work, and the tasks held here. */
  async health(): Promise<NpuHealth> {
    return this.recovery.health();
  }

  /** The watchdog found the loop hung: every task here fails and the engine is replaced. */
  async recover(q: { reason: string }): Promise<{ numTasksFailed: number }> {
    return this.recovery.recover(q);
  }

  /** A drill's fault (POST /api/faults); refused unless FAULT_INJECTION is on. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.recovery.injectFault(q);
  }

  /** Cancels a task (its client went away): aborts its sequences and frees their KV blocks. */
  async cancel(q: { taskId: string; reason: string }): Promise<{ cancelled: boolean }> {
    const found = this.streams.has(q.taskId);
    this.streams.cancel(q.taskId, q.reason);
    return { cancelled: found };
  }
}
