/**
 * NpuAttention: the Npu's moe-attention seat. Holds the optional AttentionRole (set when this Npu
 * joins a moe-attention instance as an attention rank) and answers the Npu's rank RPCs with it:
 * configure and group setup, E2A delivery, the leader-driven steps, EPLB and failover, and rank
 * 0's routing of new tasks over the attention ranks. The rank mechanics are in attention-rank.ts.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import { errorFields } from "../shared/log.ts";
import type { AttentionLoad } from "../shared/moe/attention-group.ts";
import type { ExpertMap } from "../shared/moe/expert-map.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import { npuName } from "../shared/protocol/names.ts";
import { type AttentionHost, AttentionRole } from "./attention-rank.ts";
import type { ExpertsView } from "./expert-balancer.ts";
import { type MoeSetup, setupGroup } from "./moe-group-setup.ts";
import type { GenerateAccepted, NpuTask } from "./task-admission.ts";

export interface AttentionSeatHost extends AttentionHost {
  /** A step this rank ran for its leader: progress for the JobExecutor's watchdog. */
  onProgress(): void;
  /** A step this rank ran for its leader threw: fail every task here. */
  onStepError(e: unknown): void;
}

export class NpuAttention {
  /** Set when this Npu is an attention rank of a moe-attention instance. */
  role: AttentionRole | null = null;

  constructor(private readonly host: AttentionSeatHost) {}

  /** The role when it is rank 0 (its engine loop runs the group steps). */
  get leader(): AttentionRole | undefined {
    return this.role?.isLeader ? this.role : undefined;
  }

  /** Joins a moe-attention instance as attention rank `rank` and loads the model without experts. */
  async configure(a: { spec: MoeGroupSpec; rank: number }): Promise<Result<MoeRankLoaded>> {
    if (this.host.slot.current && !this.role) {
      return failure(
        errorInfo("conflict", "this NPU already serves a colocated model", null, "npu_busy"),
      );
    }
    this.role ??= new AttentionRole(this.host, a.spec, a.rank);
    return this.role.load();
  }

  /** As rank 0: sets up every rank of the group. */
  setup(s: MoeSetup): Promise<Result<{ spec: MoeGroupSpec; loaded: MoeRankLoaded[] }>> {
    return setupGroup(this.host.env, s, (spec) => this.configure({ spec, rank: 0 }));
  }

  /** An E2A part from an expert rank. */
  deliver(msg: CommMessage): void {
    if (!this.role) throw new Error("this NPU is not an attention rank");
    this.role.deliver(msg);
  }

  /** This rank's part of a group step, run for the leader. */
  async step(a: {
    map: ExpertMap | null;
  }): Promise<{ hasWork: boolean; load: AttentionLoad | null }> {
    if (!this.role) throw new Error("this NPU is not an attention rank");
    try {
      await this.role.ownStep(a.map);
      this.host.onProgress();
    } catch (e) {
      this.host.log.error("error.unhandled", { where: "attention step", ...errorFields(e, true) });
      this.host.onStepError(e);
      throw e;
    }
    return {
      hasWork: this.host.slot.current?.instance.engine.hasWork() ?? false,
      load: this.role.currentLoad(),
    };
  }

  /** EPLB view (rank 0), with its expert-rank failovers. */
  async experts(): Promise<ExpertsView | null> {
    const view = (await this.role?.balancer?.view()) ?? null;
    return view && { ...view, failovers: [...(this.role?.failover?.events ?? [])] };
  }

  failover(change: { map: ExpertMap } | { error: string }): void {
    this.role?.applyFailover(change);
  }

  async rebalance(): Promise<{ fromVersion: number; toVersion: number; imbalance: number } | null> {
    return (await this.role?.balancer?.rebalance()) ?? null;
  }

  markBusy(rank: number): void {
    this.role?.markBusy(rank);
  }

  comm(): StepComm[] {
    return this.role?.comm() ?? [];
  }

  /**
   * Rank 0 balances the instance's new (not prefilled) tasks over its attention ranks: the
   * accepted stream from the rank it chose, or null when the task stays here.
   */
  routeElsewhere(task: NpuTask): Promise<Result<GenerateAccepted>> | null {
    const a = this.role;
    if (!a?.isLeader || task.prefilled) return null;
    const numTokens = task.prompts.reduce((n, p) => n + p.length, 0) + task.maxTokens * task.n;
    const rank = a.route(numTokens);
    if (rank === 0) return null;
    return this.host.env.NPU.getByName(npuName(a.spec.instanceId, rank)).generate(task);
  }

  /** A leader holds its group's tasks: the ones it placed on its other ranks. */
  async otherTaskIds(): Promise<string[]> {
    return this.role?.isLeader ? await this.role.otherTaskIds() : [];
  }
}
