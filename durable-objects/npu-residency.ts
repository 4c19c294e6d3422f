/**
 * NpuResidency: what binds a model to this Npu and keeps it resident. Runs the ClusterManager's
 * scaling steps (pre-load, load weights, warm up, drain, unbind; the policies are in
 * npu-lifecycle.ts) and schedules the Npu's one alarm: the earliest of a KV handoff region's
 * expiry, a pinned context cache's expiry and the pool/bound keep-alive, never postponing an
 * earlier alarm (the engine loop's continuation).
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { shouldSetAlarm } from "../shared/serving/batch.ts";
import type { LoadReport, WeightSource } from "../shared/types/instances.ts";
import type { ContextPins } from "./context-pins.ts";
import type { EngineLoop } from "./engine-loop.ts";
import type { KvHandoff } from "./kv-handoff.ts";
import type { NpuLifecycle } from "./npu-lifecycle.ts";
import type { ModelSlot } from "./npu-loader.ts";
import type { WeightRef } from "./weight-tiers.ts";

/** What a loadWeights call names: the model's weights and the tier they come from. */
export type LoadWeightsRequest = WeightRef & { source: WeightSource; verify?: boolean };

export interface ResidencyHost {
  storage: DurableObjectStorage;
  slot: ModelSlot;
  lifecycle: NpuLifecycle;
  pins: ContextPins;
  handoff: KvHandoff;
  loop: EngineLoop;
  /** Whether a task runs or starts here (drain waits until none does). */
  busy(): boolean;
}

export class NpuResidency {
  constructor(private readonly host: ResidencyHost) {}

  /**
   * Pre-loads the runtime (wasm instantiated, `reserveBytes` of memory reserved). `pooled`: the
   * reserve is committed too (ModelSlot.preload), and the Npu waits in the pool, kept resident
   * by its alarm.
   */
  async preload(q: { reserveBytes: number; pooled: boolean }): Promise<{ preloadMs: number }> {
    const t0 = Date.now();
    await this.host.slot.preload(q.reserveBytes, q.pooled);
    this.host.lifecycle.pooled = q.pooled;
    await this.scheduleAlarm();
    return { preloadMs: Date.now() - t0 };
  }

  /** Loads a model's weights from a tier into an arena sized to the model. */
  async loadWeights(q: LoadWeightsRequest): Promise<Result<LoadReport>> {
    this.host.lifecycle.pooled = false;
    this.host.lifecycle.draining = false;
    const r = await this.host.slot.load(q, q.source, q.verify ?? false);
    await this.scheduleAlarm(); // keeps the weights resident
    return r;
  }

  /** Post-load warm-up: one greedy token through the engine loop. */
  async warmUp(): Promise<Result<{ warmupMs: number }>> {
    const engine = this.host.slot.current?.instance.engine;
    if (!engine) return failure(errorInfo("internal", "no model is loaded to warm up"));
    const r = await this.host.lifecycle.warmUp(engine, () => this.host.loop.kick());
    // a fresh instance's only steps were the warm-up's: stats list the steps that served tasks
    this.host.loop.recentSteps.length = 0;
    return r;
  }

  /** Resolves once no task runs or starts here (the ClusterManager stopped placing them). */
  async drain(): Promise<{ drainMs: number }> {
    const t0 = Date.now();
    await this.host.lifecycle.drain(() => this.host.busy());
    return { drainMs: Date.now() - t0 };
  }

  /**
   * Unbinds the model (memory reset: the runtime is dropped). With `pooled`, a fresh runtime is
   * pre-loaded at once so the Npu goes back to the pool warm.
   */
  async unbind(q: { pooled: boolean; reserveBytes: number }): Promise<{ unbound: boolean }> {
    const { slot, lifecycle } = this.host;
    const had = slot.current !== null;
    this.host.pins.expire(slot.current?.instance.engine, Number.POSITIVE_INFINITY);
    slot.unbind();
    lifecycle.draining = false;
    if (q.pooled) await slot.preload(q.reserveBytes, true);
    lifecycle.pooled = q.pooled;
    await this.scheduleAlarm();
    return { unbound: had };
  }

  /**
   * The alarm's housekeeping: expires pinned context caches and KV handoff regions no decode side
   * ever pulled, then schedules the next alarm.
   */
  async onAlarm(now: number): Promise<void> {
    this.host.pins.expire(this.host.slot.current?.instance.engine, now);
    this.host.handoff.expireRegions(now);
    await this.scheduleAlarm();
  }

  async scheduleAlarm(): Promise<void> {
    const times = [
      this.host.handoff.nextRegionExpiry(),
      this.host.pins.nextExpiry(),
      this.host.lifecycle.nextKeepAlive(Date.now(), this.host.slot.current !== null),
    ].filter((t): t is number => t !== null);
    if (times.length === 0) return;
    const at = Math.min(...times);
    // never postpone an earlier alarm (the engine loop's continuation)
    const { storage } = this.host;
    if (shouldSetAlarm(await storage.getAlarm(), at)) await storage.setAlarm(at);
  }
}
