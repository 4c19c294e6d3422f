/**
 * Expert: an expert-parallel rank of a moe-attention instance (xDeepServe's MoE die). Holds the
 * experts the expert map gives it in every MoE layer, read from the R2 registry by byte ranges
 * at the GGUF header's offsets (the header itself by a growing prefix read), and serves A2E parts
 * from the instance's attention Npus through shared/moe/expert-rank.ts, answering with E2A
 * parts. Holds no state between steps apart from its weights and counters. Attention rank 0's
 * failover watch reads its progress (`moeHealth`); drills inject faults into its step handling.
 */
import { DurableObject } from "cloudflare:workers";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { CommMessage, StepComm } from "../shared/fabric/comm.ts";
import { errorFields, Logger, parseLogLevel } from "../shared/log.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import { ExpertShard } from "../shared/model/expert-shard.ts";
import { KernelMemoryError } from "../shared/model/kernels.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";
import { expertsOnRank } from "../shared/moe/expert-map.ts";
import {
  ExpertRank,
  type ExpertRankHealth,
  type ExpertRankStats,
} from "../shared/moe/expert-rank.ts";
import type { MoeGroupSpec, MoeRankLoaded } from "../shared/protocol/moe.ts";
import { npuName } from "../shared/protocol/names.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import { type Env, getConfig } from "./env.ts";
import { FaultSwitch } from "./faults.ts";
import { kernelsModule } from "./kernels-module.ts";
import { wallClock } from "./moe-clock.ts";
import { readHeader, readRange } from "./r2-range.ts";

export interface ExpertStats extends ExpertRankStats {
  model: string;
  capacityBytes: number;
  usedBytes: number;
}

export class Expert extends DurableObject<Env> {
  private readonly log: Logger;
  private rank: ExpertRank | null = null;
  private shard: ExpertShard | null = null;
  private model = "";
  private capacityBytes = 0;
  private usedBytes = () => 0;
  private readonly faults: FaultSwitch;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger({ do: "Expert", name: ctx.id.name ?? "" }, parseLogLevel(env.LOG_LEVEL));
    this.faults = new FaultSwitch(ctx, env, this.log, true);
  }

  /** Loads this rank's experts of `spec` (once) and joins the group. Failures are values. */
  async configure(a: { spec: MoeGroupSpec; rank: number }): Promise<Result<MoeRankLoaded>> {
    if (this.rank) {
      return {
        ok: true,
        value: {
          role: "expert",
          rank: a.rank,
          residentWeightBytes: this.rank.stats().residentBytes,
          weightBytesRead: this.rank.stats().bytesRead,
        },
      };
    }
    const { spec } = a;
    const t0 = Date.now();
    try {
      const file = await readHeader(this.env, spec.r2Key);
      const config = modelConfigFromGguf(file);
      const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
      const kernels = createWasmKernels(wasm, getConfig(this.env).npuMemoryBudgetBytes);
      const shard = await ExpertShard.load(
        file,
        (offset, length) => readRange(this.env, spec.r2Key, offset, length),
        config,
        kernels,
        (l) => expertsOnRank(spec.map, l, a.rank),
      );
      this.rank = new ExpertRank({
        rank: a.rank,
        numAttentionRanks: spec.numAttention,
        maxTokensPerRank: getConfig(this.env).maxNumBatchedTokens,
        config,
        kernels,
        shard,
        attention: (r) => ({
          deliver: (msg: CommMessage) =>
            this.env.NPU.getByName(npuName(spec.instanceId, r)).moeDeliver(msg),
        }),
        clock: wallClock,
        timeoutMs: spec.timeoutMs,
        beforeServe: () => this.faults.gate("the expert step"),
      });
      this.model = spec.model;
      this.shard = shard;
      this.capacityBytes = kernels.capacityBytes;
      this.usedBytes = () => kernels.usedBytes;
      this.log.info("experts.loaded", {
        model: spec.model,
        rank: a.rank,
        residentBytes: shard.residentBytes,
        bytesRead: shard.bytesRead,
        durationMs: Date.now() - t0,
      });
      return {
        ok: true,
        value: {
          role: "expert",
          rank: a.rank,
          residentWeightBytes: shard.residentBytes,
          weightBytesRead: shard.bytesRead,
        },
      };
    } catch (e) {
      this.log.error("experts.load_failed", { model: spec.model, ...errorFields(e) });
      const code = e instanceof KernelMemoryError ? "model_too_large" : null;
      return failure(
        errorInfo(
          "internal",
          `cannot load the experts of ${spec.model}: ${(e as Error).message}`,
          null,
          code,
        ),
      );
    }
  }

  /** An A2E part from an attention rank. */
  async moeDeliver(msg: CommMessage): Promise<void> {
    if (!this.rank) throw new Error("this expert rank is not configured");
    this.rank.deliver(msg);
  }

  /** Loads the experts of each layer the next expert map adds to this rank (EPLB). */
  async addExperts(a: { experts: number[][] }): Promise<void> {
    if (!this.shard) throw new Error("this expert rank is not configured");
    for (const [l, ids] of a.experts.entries()) await this.shard.add(l, ids);
  }

  /** Comm counters per (layer, step) of this expert rank (the latest COMM_HISTORY). */
  async moeComm(): Promise<StepComm[]> {
    return this.rank?.counters.list() ?? [];
  }

  /** Per-expert token counts since the last call (EPLB), then zeroed. */
  async takeTokenCounts(): Promise<number[][]> {
    return this.rank?.takeTokenCounts() ?? [];
  }

  /** Progress for the failover watch; "empty" when this rank holds no experts (it was reset). */
  async moeHealth(): Promise<ExpertRankHealth | "empty"> {
    return this.rank?.health() ?? "empty";
  }

  /** A drill's fault (POST /api/faults); refused unless FAULT_INJECTION is on. */
  async injectFault(q: { fault: FaultKind }): Promise<Result<null>> {
    if (!this.rank) {
      return failure(errorInfo("not_found", "no expert rank is configured there", "rank"));
    }
    return this.faults.inject(q.fault);
  }

  async stats(): Promise<ExpertStats | null> {
    if (!this.rank) return null;
    return {
      ...this.rank.stats(),
      model: this.model,
      capacityBytes: this.capacityBytes,
      usedBytes: this.usedBytes(),
    };
  }
}
