/**
 * Npu: one NPU of an instance. Holds a model's weights and KV cache in its kernel arena (the
 * per-NPU memory budget), runs the engine loop with continuous batching, and streams each task's
 * tokens back as NDJSON GenerateEvents while they are produced. Tasks arrive tokenised (the
 * JobExecutor tokenises once). The maths and policies are in shared/; this shell uses the
 * Engine's public methods, owns the RPC surface, and delegates loading (npu-loader.ts), task
 * admission and context-cache pins (task-admission.ts), the engine loop (engine-loop.ts), task streams and progress
 * reports (task-streams.ts), the PD handoff of a prompt's KV (kv-handoff.ts), the fabric regions
 * peers read (fabric-host.ts) and the moe-attention attention rank (npu-attention.ts); npu-parts.ts
 * builds and wires those parts.
 */
import { DurableObject } from "cloudflare:workers";
import type { Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import type { FabricStats, RegionKind, RegionMeta } from "../shared/fabric/regions.ts";
import type { WeightSelection } from "../shared/model/weights.ts";
import type { AttentionLoad } from "../shared/moe/attention-group.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";
import type { GenerateTask, Prefilled } from "../shared/protocol/messages.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import type { NpuHealth } from "../shared/serving/watchdog.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type { LoadReport } from "../shared/types/instances.ts";
import type { Env } from "./env.ts";
import type { ExpertsView } from "./expert-balancer.ts";
import type { RegionData } from "./fabric-host.ts";
import type { MoeSetup } from "./moe-group-setup.ts";
import { type NpuParts, npuParts } from "./npu-parts.ts";
import type { LoadWeights } from "./npu-residency.ts";
import { type NpuStats, npuStats } from "./npu-stats.ts";
import type { GenerateAccepted, NpuTask, PinPrefix } from "./task-admission.ts";
import type { ForkImage } from "./weight-tiers.ts";

export class Npu extends DurableObject<Env> {
  /** Private to the class; tests reach the model slot through it (runInDurableObject). */
  private readonly parts: NpuParts;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.parts = npuParts(ctx, env);
  }

  // --- moe-attention: this Npu as an attention rank (npu-attention.ts)

  /** Joins a moe-attention instance as attention rank `rank` and loads the model without experts. */
  async attentionConfigure(a: {
    spec: MoeGroupSpec;
    rank: number;
  }): Promise<Result<MoeRankLoaded>> {
    return this.parts.attention.configure(a);
  }

  /** As rank 0 of a moe-attention instance: sets up every rank (POST /api/deployments). */
  async moeSetup(s: MoeSetup): Promise<Result<{ spec: MoeGroupSpec; loaded: MoeRankLoaded[] }>> {
    return this.parts.attention.setup(s);
  }

  /** An E2A part from an expert rank. */
  async moeDeliver(msg: CommMessage): Promise<void> {
    this.parts.attention.deliver(msg);
  }

  /** The leader asks this rank for its part of a group step. */
  async attentionStep(a: {
    map: ExpertMap | null;
  }): Promise<{ hasWork: boolean; load: AttentionLoad | null }> {
    return this.parts.attention.step(a);
  }

  /** EPLB view of this moe-attention instance (rank 0), with its expert-rank failovers. */
  async moeExperts(): Promise<ExpertsView | null> {
    return this.parts.attention.experts();
  }

  /** Rank 0 failed an expert rank over: switch to `map` now (mid-step too), or fail with `error`. */
  async attentionFailover(change: { map: ExpertMap } | { error: string }): Promise<void> {
    this.parts.attention.failover(change);
  }

  /** Rebalances this moe-attention instance's experts now (rank 0). */
  async moeRebalance(): Promise<{
    fromVersion: number;
    toVersion: number;
    imbalance: number;
  } | null> {
    return this.parts.attention.rebalance();
  }

  /** A rank of the leader's group got work. */
  async attentionKick(a: { rank: number }): Promise<void> {
    this.parts.attention.markBusy(a.rank);
  }

  /** Comm counters per (layer, step) of this attention rank. */
  async moeComm(): Promise<StepComm[]> {
    return this.parts.attention.comm();
  }

  /** Loads `model` from the R2 registry unless it is loaded already. */
  async load(q: { model: string; r2Key: string }): Promise<Result<{ model: string }>> {
    const r = await this.parts.slot.ensure(q.model, q.r2Key);
    return r.ok ? { ok: true, value: { model: r.value.model } } : r;
  }

  // --- scaling (the ClusterManager drives these steps; npu-residency.ts)

  /** Pre-loads the runtime; `pooled`: the Npu then waits in the pool, kept resident by its alarm. */
  async preload(q: { reserveBytes: number; pooled: boolean }): Promise<{ preloadMs: number }> {
    return this.parts.residency.preload(q);
  }

  /** Loads a model's weights from a tier into an arena sized to the model. */
  async loadWeights(q: LoadWeights): Promise<Result<LoadReport>> {
    return this.parts.residency.loadWeights(q);
  }

  /** Post-load warm-up: one greedy token through the engine loop. */
  async warmUp(): Promise<Result<{ warmupMs: number }>> {
    return this.parts.residency.warmUp();
  }

  /** Resolves once no task runs or starts here (the ClusterManager stopped placing them). */
  async drain(): Promise<{ drainMs: number }> {
    return this.parts.residency.drain();
  }

  /** Unbinds the model; with `pooled`, goes back to the pool with a fresh runtime. */
  async unbind(q: { pooled: boolean; reserveBytes: number }): Promise<{ unbound: boolean }> {
    return this.parts.residency.unbind(q);
  }

  /** What a new instance forks from this one (npu-loader.ts), or null unless it serves `model`. */
  async forkImage(q: { model: string; weights: WeightSelection }): Promise<ForkImage | null> {
    return this.parts.slot.forkImage(q.model, q.weights);
  }

  async stats(): Promise<NpuStats> {
    const { slot, loop, streams, lifecycle } = this.parts;
    return npuStats({ loaded: slot.current, loop, streams, lifecycle });
  }

  /**
   * Starts a task and returns its event stream at once (task-admission.ts); failures are values.
   * Rank 0 of a moe-attention instance may hand it to another attention rank.
   */
  async generate(task: NpuTask): Promise<Result<GenerateAccepted>> {
    return this.parts.attention.routeElsewhere(task) ?? this.parts.admission.generate(task);
  }

  /** Prefill task of a PD job: returns where the decode side pulls the prompt's KV from. */
  async prefill(task: GenerateTask & { r2Key: string }): Promise<Result<Prefilled>> {
    return this.parts.admission.prefill(task);
  }

  /**
   * Explicit context cache: computes a prompt and pins its full KV blocks on this NPU until
   * `expiresAt` (or unpinPrefix), so requests that start with it reuse them through the prefix
   * cache. Pinned blocks live in memory: a restarted NPU has lost them, and requests then
   * recompute the prefix (their output is the same; only cached_tokens drops).
   */
  async pinPrefix(a: PinPrefix): Promise<Result<{ numTokens: number; numPinnedTokens: number }>> {
    return this.parts.admission.pinPrefix(a);
  }

  async unpinPrefix(a: { cacheId: string }): Promise<{ unpinned: boolean }> {
    return { unpinned: this.parts.pins.unpin(this.parts.slot.current?.instance.engine, a.cacheId) };
  }

  /**
   * The Npu's one alarm: continues the engine loop (its last invocation used its time slice),
   * expires pinned context caches and KV handoff regions no decode side ever pulled, and keeps a
   * pooled or bound Npu resident.
   */
  override async alarm(): Promise<void> {
    this.parts.kick();
    await this.parts.residency.onAlarm(Date.now());
  }

  // --- the fabric (this NPU's regions, read and freed by peers)

  async fabricWrite(a: {
    regionId: string;
    kind: RegionKind;
    bytes: Uint8Array;
    seq?: number;
  }): Promise<RegionMeta> {
    return this.parts.fabric.write(a);
  }

  async fabricRead(a: { regionId: string; minSeq?: number }): Promise<RegionData | null> {
    return this.parts.fabric.read(a);
  }

  async fabricWait(a: { regionId: string; minSeq: number; timeoutMs: number }): Promise<boolean> {
    return this.parts.fabric.wait(a);
  }

  async fabricFree(a: { regionId: string }): Promise<boolean> {
    return this.parts.fabric.free(a);
  }

  async fabricStats(): Promise<{ counters: FabricStats; regions: RegionMeta[] }> {
    return { counters: this.parts.fabric.counters(), regions: this.parts.fabric.list() };
  }

  // --- health (the JobExecutor's watchdog) and fault injection (npu-recovery.ts)

  /** The engine loop's progress counter, whether it has work, and the tasks held here. */
  async health(): Promise<NpuHealth> {
    return this.parts.recovery.health();
  }

  /** The watchdog found the loop hung: every task here fails and the engine is replaced. */
  async recover(q: { reason: string }): Promise<{ numTasksFailed: number }> {
    return this.parts.recovery.recover(q);
  }

  /** A drill's fault (POST /api/faults); refused unless FAULT_INJECTION is on. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    return this.parts.recovery.injectFault(q);
  }

  /** Cancels a task (its client went away): aborts its sequences and frees their KV blocks. */
  async cancel(q: { taskId: string; reason: string }): Promise<{ cancelled: boolean }> {
    const found = this.parts.streams.has(q.taskId);
    this.parts.streams.cancel(q.taskId, q.reason);
    return { cancelled: found };
  }
}
