/**
 * EPLB for a moe-attention instance, run by attention rank 0: reads the Expert DOs' per-expert
 * token counts, reports the imbalance (GET /api/deployments/:id/experts), and rebalances (admin
 * POST .../rebalance, or on its own when the imbalance stays above the threshold): the next map
 * from shared/serving/eplb.ts, its new replicas loaded on their Expert DOs first, then swapped in
 * at a group-step boundary, so steps already running finish on the old map.
 */

import { errorFields, type Logger } from "../shared/log.ts";
import { type ExpertMap, expertsOnRank, liveRanks } from "../shared/moe/expert-map.ts";
import type { MoeGroupSpec } from "../shared/protocol/moe.ts";
import { expertName } from "../shared/protocol/names.ts";
import {
  DEFAULT_EPLB,
  type EplbOptions,
  expertLoads,
  imbalance,
  rankLoads,
  rebalance,
} from "../shared/serving/eplb.ts";
import type { Env } from "./env.ts";
import type { FailoverEvent } from "./expert-failover.ts";

/** Group steps between automatic imbalance checks. */
const CHECK_EVERY_STEPS = 64;

export interface ExpertsView {
  mapVersion: number;
  /** [layer][expert] -> expert ranks. */
  replicas: number[][][];
  /** Per layer: tokens each expert rank served since the last rebalance, and their imbalance. */
  layers: { layer: number; rankTokens: number[]; imbalance: number }[];
  /** Mean over layers of hottest-rank over mean-rank tokens. */
  imbalance: number;
  /** Per expert rank: experts held (any layer) and the kernel bytes they take. */
  ranks: { rank: number; experts: number[]; residentBytes: number }[];
  numRebalances: number;
  threshold: number;
  /** Expert ranks failed over (they hold nothing and get no part). */
  down: number[];
  /** Rank 0's expert-rank failovers (expert-failover.ts), oldest first. */
  failovers?: FailoverEvent[];
}

export class ExpertBalancer {
  private steps = 0;
  private above = 0;
  private numRebalances = 0;
  private running: Promise<unknown> | null = null;

  constructor(
    private readonly env: Env,
    private readonly spec: MoeGroupSpec,
    /** Makes `map` the one the next group step uses. */
    private readonly swap: (map: ExpertMap) => void,
    private readonly log: Logger,
    private readonly opts: EplbOptions = DEFAULT_EPLB,
  ) {}

  private expert(j: number) {
    return this.env.EXPERT.getByName(expertName(this.spec.instanceId, j));
  }

  /** Every expert rank, in order. */
  private ranks(): number[] {
    return Array.from({ length: this.spec.numExperts }, (_, j) => j);
  }

  /** A failed-over rank is not asked (it may hang or have lost its experts). */
  private isDown(j: number): boolean {
    return !liveRanks(this.spec.map).includes(j);
  }

  async view(): Promise<ExpertsView> {
    const stats = await Promise.all(
      this.ranks().map((j) => (this.isDown(j) ? null : this.expert(j).stats())),
    );
    const counts = stats.map((s) => s?.tokenCounts ?? []);
    const loads = rankLoads(counts);
    const live = (l: number[]) => l.filter((_, j) => !this.isDown(j));
    const layers = loads.map((l, layer) => ({
      layer,
      rankTokens: l,
      imbalance: imbalance(live(l)),
    }));
    return {
      mapVersion: this.spec.map.version,
      replicas: this.spec.map.replicas,
      layers,
      imbalance: layers.reduce((a, l) => a + l.imbalance, 0) / Math.max(1, layers.length),
      ranks: stats.map((s, rank) => ({
        rank,
        experts: s?.experts ?? [],
        residentBytes: s?.residentBytes ?? 0,
      })),
      numRebalances: this.numRebalances,
      threshold: this.opts.threshold,
      down: this.spec.map.down ?? [],
    };
  }

  /**
   * Takes the counts since the last rebalance (one time slice), makes the next map, loads its new
   * replicas on every Expert DO, then swaps it in. Returns the map versions and the imbalance the
   * decision used.
   */
  async rebalance(): Promise<{ fromVersion: number; toVersion: number; imbalance: number }> {
    const counts = await Promise.all(
      this.ranks().map((j) => (this.isDown(j) ? [] : this.expert(j).takeTokenCounts())),
    );
    const loads = rankLoads(counts);
    const before =
      loads.reduce((a, l) => a + imbalance(l.filter((_, j) => !this.isDown(j))), 0) /
      Math.max(1, loads.length);
    const slices = expertLoads(counts).map((perExpert) => [perExpert]);
    const from = this.spec.map;
    const next = rebalance(from, slices, this.opts);
    await Promise.all(
      this.ranks().map((j) =>
        this.isDown(j)
          ? null
          : this.expert(j).addExperts({
              experts: next.replicas.map((_, l) => expertsOnRank(next, l, j)),
            }),
      ),
    );
    if (this.spec.map !== from) {
      // an expert rank failed over meanwhile: its map wins, this one still names the failed rank
      throw new Error(
        `the expert map changed during the rebalance (now v${this.spec.map.version})`,
      );
    }
    this.swap(next);
    this.numRebalances++;
    this.log.info("eplb.rebalanced", {
      instanceId: this.spec.instanceId,
      fromVersion: from.version,
      toVersion: next.version,
      imbalance: before,
    });
    return { fromVersion: from.version, toVersion: next.version, imbalance: before };
  }

  /** After each group step: every CHECK_EVERY_STEPS, rebalance when the imbalance stays high. */
  afterStep(waitUntil: (p: Promise<unknown>) => void): void {
    if (++this.steps % CHECK_EVERY_STEPS !== 0 || this.running) return;
    const check = this.view().then(async (v) => {
      this.above = v.imbalance > this.opts.threshold ? this.above + 1 : 0;
      if (this.above >= this.opts.patience) {
        this.above = 0;
        await this.rebalance();
      }
    });
    this.running = check
      .catch((e: unknown) => this.log.error("eplb.failed", errorFields(e)))
      .finally(() => {
        this.running = null;
      });
    waitUntil(this.running);
  }
}
