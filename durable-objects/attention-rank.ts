/**
 * The Npu's attention role in a moe-attention instance (xDeepServe's attention die): the model
 * is loaded without its experts and runs through a DisaggMoe executor whose peers are the
 * instance's Expert DOs. The attention ranks step in lockstep, driven by rank 0 (the leader):
 * each group step the leader runs its own engine step and asks every other rank for one
 * (`remoteStep`), so every expert rank hears from every attention rank each (layer, step). A
 * rank that gets a task tells the leader (`kick`), which keeps stepping while any rank has work.
 */

import { DisaggMoe } from "../shared/engine/disagg-executor.ts";
import type { StepReport } from "../shared/engine/engine.ts";
import { LocalExecutor } from "../shared/engine/local-executor.ts";
import type { Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import { expertName, npuName } from "../shared/protocol/names.ts";
import type { Steppable } from "./engine-loop.ts";
import type { Env } from "./env.ts";
import { wallClock } from "./moe-clock.ts";
import type { ModelSlot } from "./npu-loader.ts";

export interface AttentionHost {
  env: Env;
  slot: ModelSlot;
  /** Starts this Npu's engine loop (the leader's loop runs group steps). */
  kickLoop(): void;
  log: Logger;
  /** Hands a step's outputs to this Npu's task streams. */
  onStep(report: StepReport, startedAt: number, endedAt: number): void;
}

export class AttentionRole implements Steppable {
  /** Other ranks that reported work (the leader steps until none has any). */
  private readonly busy = new Set<number>();
  /** The DisaggMoe the loaded model runs through. */
  private built: DisaggMoe | null = null;

  constructor(
    private readonly host: AttentionHost,
    readonly spec: MoeGroupSpec,
    readonly rank: number,
  ) {}

  get isLeader(): boolean {
    return this.rank === 0;
  }

  private get engine() {
    return this.host.slot.current?.instance.engine;
  }

  /** Loads the model as an attention rank. */
  async load(): Promise<Result<MoeRankLoaded>> {
    const s = this.spec;
    let moe: DisaggMoe | null = null;
    this.host.slot.attention = {
      makeExecutor: (t) => {
        const c = t.config;
        const layers = Array.from({ length: c.numHiddenLayers }, (_, l) => l);
        moe = new DisaggMoe({
          rank: this.rank,
          hiddenSize: c.hiddenSize,
          topK: c.numExpertsPerTok,
          moeLayers: c.numExperts > 0 ? layers : [],
          experts: (j) => ({
            deliver: (msg: CommMessage) =>
              this.host.env.EXPERT.getByName(expertName(s.instanceId, j)).moeDeliver(msg),
          }),
          map: () => this.spec.map,
          clock: wallClock,
          timeoutMs: s.timeoutMs,
        });
        return new LocalExecutor(t, moe);
      },
    };
    const r = await this.host.slot.ensure(s.model, s.r2Key);
    if (!r.ok) return r;
    if (moe) this.built = moe;
    return {
      ok: true,
      value: {
        role: "attention",
        rank: this.rank,
        residentWeightBytes: r.value.instance.residentWeightBytes,
      },
    };
  }

  private get exec(): DisaggMoe {
    if (!this.built) throw new Error("this attention rank has no model loaded");
    return this.built;
  }

  comm(): StepComm[] {
    return this.built?.counters.list() ?? [];
  }

  deliver(msg: CommMessage): void {
    this.exec.deliver(msg);
  }

  /** New work on this rank: the leader steps. */
  kick(): void {
    if (this.isLeader) this.host.kickLoop();
    else {
      const leader = this.host.env.NPU.getByName(npuName(this.spec.instanceId, 0));
      leader.attentionKick({ rank: this.rank }).catch((e: unknown) => {
        this.host.log.error("attention.kick_failed", { rank: this.rank, ...errorFields(e) });
      });
    }
  }

  /** The leader hears that rank `rank` has work. */
  markBusy(rank: number): void {
    this.busy.add(rank);
    this.host.kickLoop();
  }

  hasWork(): boolean {
    return (this.engine?.hasWork() ?? false) || this.busy.size > 0;
  }

  /** This rank's part of a group step (every rank, the leader's own part included). */
  async ownStep(): Promise<StepReport | null> {
    const engine = this.engine;
    try {
      const t0 = Date.now();
      const report = engine?.hasWork() ? await engine.step() : null;
      await this.exec.endStep();
      if (report && !this.isLeader) this.host.onStep(report, t0, Date.now());
      return report;
    } catch (e) {
      this.exec.abortStep();
      throw e;
    }
  }

  /** The leader's group step: its own part and every other rank's, in parallel. */
  async step(): Promise<StepReport | null> {
    const others = Array.from({ length: this.spec.numAttention - 1 }, (_, i) => i + 1);
    const stub = (a: number) => this.host.env.NPU.getByName(npuName(this.spec.instanceId, a));
    // kicks that arrive during the step add ranks back, so none is lost
    this.busy.clear();
    const [own, ...rest] = await Promise.allSettled([
      this.ownStep(),
      ...others.map((a) => stub(a).attentionStep()),
    ]);
    rest.forEach((r, i) => {
      const a = others[i] as number;
      if (r.status === "fulfilled" && r.value.hasWork) this.busy.add(a);
    });
    const failed = [own, ...rest].find((r) => r?.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return (own as PromiseFulfilledResult<StepReport | null>).value;
  }
}
