/**
 * The Npu's attention role in a moe-attention instance (xDeepServe's attention die): the model
 * is loaded without its experts and runs through a DisaggMoe executor whose peers are the
 * instance's Expert DOs. The attention ranks step in lockstep, driven by rank 0 (the leader):
 * each group step the leader runs its own engine step and asks every other rank for one
 * (`remoteStep`), so every expert rank hears from every attention rank each (layer, step). A
 * rank that gets a task tells the leader (`kick`), which keeps stepping while any rank has work.
 * The leader also watches the expert ranks during each group step and fails a failed one over
 * (expert-failover.ts): every rank switches map and replays the exchange in flight. Setting the
 * group up (the expert map, every rank configured) is moe-group-setup.ts; the leader's book of
 * the other ranks (work, loads for DP routing, map versions sent) is attention-ledger.ts.
 */

import type { StepReport } from "../shared/engine/engine.ts";
import type { Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { type AttentionLoad, attentionLoad } from "../shared/moe/attention-group.ts";
import { DisaggMoe } from "../shared/moe/disagg-executor.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";
import { attentionExecutor, type PingPongMoe } from "../shared/moe/ping-pong.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import { expertName, npuName } from "../shared/protocol/names.ts";
import { LeaderLedger } from "./attention-ledger.ts";
import type { Steppable } from "./engine-loop.ts";
import type { Env } from "./env.ts";
import { ExpertBalancer } from "./expert-balancer.ts";
import { ExpertFailover } from "./expert-failover.ts";
import { wallClock } from "./moe-clock.ts";
import type { ModelSlot } from "./npu-loader.ts";

export interface AttentionHost {
  env: Env;
  slot: ModelSlot;
  /** Starts this Npu's engine loop (the leader's loop runs group steps). */
  kickLoop(): void;
  log: Logger;
  waitUntil(p: Promise<unknown>): void;
  /** Hands a step's outputs to this Npu's task streams. */
  onStep(report: StepReport, startedAt: number, endedAt: number): void;
}

export class AttentionRole implements Steppable {
  /** Rank 0: the other ranks' work, loads and map versions (the leader steps while any has work). */
  private readonly ledger: LeaderLedger;
  /** The DisaggMoe (or ping-pong pair) the loaded model runs through. */
  private built: DisaggMoe | PingPongMoe | null = null;
  /** The expert map this rank's current group step runs on (set at each step's start). */
  private activeMap: ExpertMap;
  /** Rank 0: EPLB. */
  readonly balancer: ExpertBalancer | null;
  /** Rank 0: the expert ranks' failover watch. */
  readonly failover: ExpertFailover | null;
  /** Expert ranks whose refused sends were logged (once per rank and map version). */
  private readonly peerErrors = new Set<string>();

  constructor(
    private readonly host: AttentionHost,
    readonly spec: MoeGroupSpec,
    readonly rank: number,
  ) {
    this.activeMap = spec.map;
    this.ledger = new LeaderLedger(spec.numAttention);
    this.balancer =
      rank === 0
        ? new ExpertBalancer(
            host.env,
            spec,
            (map) => {
              this.spec.map = map; // the next group step picks it up
            },
            host.log,
          )
        : null;
    this.failover =
      rank === 0
        ? new ExpertFailover({
            env: host.env,
            log: host.log,
            spec,
            broadcast: (change) => this.broadcast(change),
          })
        : null;
  }

  /** Rank 0: every attention rank (this one first) switches to a failover map, or fails. */
  private async broadcast(change: { map: ExpertMap } | { error: string }): Promise<void> {
    this.applyFailover(change);
    await Promise.allSettled(
      this.ledger.others.map(async (a) => {
        await this.host.env.NPU.getByName(npuName(this.spec.instanceId, a)).attentionFailover(
          change,
        );
        if ("map" in change) this.ledger.sent(a, change.map.version);
      }),
    );
  }

  /** An expert rank failed over (the leader says): the map changes now, mid-step too. */
  applyFailover(change: { map: ExpertMap } | { error: string }): void {
    if ("map" in change) {
      this.activeMap = change.map;
      if (this.isLeader) this.spec.map = change.map;
      this.built?.failover(change.map);
    } else this.built?.fail(new Error(change.error));
  }

  get isLeader(): boolean {
    return this.rank === 0;
  }

  private get engine() {
    return this.host.slot.current?.instance.engine;
  }

  /** Loads the model as an attention rank. */
  async load(): Promise<Result<MoeRankLoaded>> {
    const s = this.spec;
    let moe: DisaggMoe | PingPongMoe | null = null;
    const pingPong = s.microBatches === 2;
    this.host.slot.attention = {
      workspaces: pingPong ? 2 : 1,
      makeExecutor: (t) => {
        const c = t.config;
        const layers = Array.from({ length: c.numHiddenLayers }, (_, l) => l);
        const built = attentionExecutor(
          t,
          pingPong ? 2 : 1,
          (microBatch) =>
            new DisaggMoe({
              rank: this.rank,
              hiddenSize: c.hiddenSize,
              topK: c.numExpertsPerTok,
              moeLayers: c.numExperts > 0 ? layers : [],
              experts: (j) => ({
                deliver: (msg: CommMessage) =>
                  this.host.env.EXPERT.getByName(expertName(s.instanceId, j)).moeDeliver(msg),
              }),
              map: () => this.activeMap,
              clock: wallClock,
              timeoutMs: s.timeoutMs,
              microBatch,
              onPeerError: (j, e) => {
                const k = `${j}/${this.activeMap.version}`;
                if (this.peerErrors.has(k)) return;
                this.peerErrors.add(k);
                this.host.log.warn("moe.send_failed", {
                  rank: this.rank,
                  expert: j,
                  ...errorFields(e),
                });
              },
            }),
        );
        moe = built.moe;
        return built.executor;
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
        weightBytesRead: r.value.bytesRead,
      },
    };
  }

  private get exec(): DisaggMoe | PingPongMoe {
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

  /**
   * Rank 0: the rank a new task's sequences go to (decode DP balancing: not full, lowest KV use),
   * counted as placed there until it reports.
   */
  route(numTokens: number): number {
    const engine = this.engine;
    return engine ? this.ledger.route(attentionLoad(engine), numTokens) : 0;
  }

  /** This rank's load, for rank 0's balancing. */
  currentLoad(): AttentionLoad | null {
    const engine = this.engine;
    return engine ? attentionLoad(engine) : null;
  }

  /** Rank 0: the tasks its other ranks hold (a rank that does not answer holds none). */
  async otherTaskIds(): Promise<string[]> {
    const ids = await Promise.all(
      this.ledger.others.map((a) =>
        this.host.env.NPU.getByName(npuName(this.spec.instanceId, a))
          .health()
          .then((h) => h.taskIds)
          .catch(() => []),
      ),
    );
    return ids.flat();
  }

  /** The leader hears that rank `rank` has work. */
  markBusy(rank: number): void {
    this.ledger.markBusy(rank);
    this.host.kickLoop();
  }

  hasWork(): boolean {
    return (this.engine?.hasWork() ?? false) || this.ledger.anyBusy();
  }

  /**
   * This rank's part of a group step (every rank, the leader's own part included); `map`: a newer
   * expert map from the leader, which this step and the next run on.
   */
  async ownStep(map: ExpertMap | null = null): Promise<StepReport | null> {
    if (map) this.activeMap = map;
    const engine = this.engine;
    try {
      const t0 = Date.now();
      this.exec.beginStep();
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
    const others = this.ledger.others;
    const stub = (a: number) => this.host.env.NPU.getByName(npuName(this.spec.instanceId, a));
    this.ledger.clearBusy();
    // every rank runs this step on the same map version (a rebalance swaps between steps)
    const map = this.spec.map;
    const all = Promise.allSettled([
      this.ownStep(map),
      ...others.map((a) => stub(a).attentionStep({ map: this.ledger.mapFor(a, map) })),
    ]);
    // the failover watch probes the expert ranks while the step is in flight
    const [own, ...rest] = await (this.failover ? this.failover.during(all) : all);
    this.balancer?.afterStep((p) => this.host.waitUntil(p));
    rest.forEach((r, i) => {
      this.ledger.settle(others[i] as number, r.status === "fulfilled" ? r.value : null);
    });
    const failed = [own, ...rest].find((r) => r?.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return (own as PromiseFulfilledResult<StepReport | null>).value;
  }
}
