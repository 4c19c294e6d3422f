/**
 * What a JobExecutor shard knows for placing requests, kept in memory and snapshotted to its
 * storage: each model's ModelScheduler (tokenizer, prefix tree, predictor, counters), the load
 * its instances pushed (LoadTable), the prompts waiting to be learnt once their tasks run, its
 * part of /metrics, and its recent decisions. The JobExecutor calls it when it places a job and
 * when an instance reports on a task; this module holds no request records.
 */
import type { EngineStats } from "../shared/engine/engine.ts";
import type { Submitted } from "../shared/protocol/messages.ts";
import { npuName } from "../shared/protocol/names.ts";
import { DecisionLog, summarizeDecision } from "../shared/serving/decision-log.ts";
import { placedTasks } from "../shared/serving/dispatch.ts";
import { ESTIMATE_TTL_MS, LoadTable } from "../shared/serving/load-table.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import type {
  DeploymentState,
  InstanceState,
  ScheduleDecision,
} from "../shared/serving/scheduling.ts";
import {
  type AnalyticsPoint,
  analyticsPoint,
  type NpuCounters,
  ServingMetrics,
} from "../shared/serving/serving-metrics.ts";
import type { DeploymentRecord, ModelRecord } from "../shared/types/deployments.ts";
import { type Env, getConfig } from "./env.ts";
import { ModelScheduler, type PlanInput, type SchedulerSnapshot } from "./model-scheduler.ts";
import type { AppliedProgress } from "./record-progress.ts";

const METRICS_KEY = "metrics";
/** Longest delay before changed metrics reach storage. */
const METRICS_SAVE_MS = 1_000;

export class PlacementState {
  readonly #schedulers = new Map<string, ModelScheduler>();
  readonly #load = new LoadTable();
  /** Placed tasks whose prompt the prefix tree learns once the instance accepts them. */
  readonly #learning = new Map<string, { model: string; blockKeys: string[]; at: number }>();
  /** This shard's part of GET /metrics. */
  readonly metrics = new ServingMetrics();
  /** The last placements, for the dashboard (in memory only). */
  readonly decisions = new DecisionLog();
  #saveTimer: ReturnType<typeof setTimeout> | null = null;
  /** Npus that failed under a task -> until when they get no new work (UNHEALTHY_FOR_MS). */
  readonly #unhealthy = new Map<string, number>();

  constructor(
    private readonly env: Env,
    private readonly kv: SyncKvStorage,
    private readonly blockSize: number,
    /** KV blocks per prefix-tree key (`prefixStrideBlocks` of PREFIX_INDEX_TOKENS). */
    private readonly prefixStrideBlocks: number,
  ) {
    const saved = kv.get<ReturnType<ServingMetrics["snapshot"]>>(METRICS_KEY);
    if (saved) this.metrics.restore(saved);
  }

  /** The state of a model's current weights (tokenizer included), restored on first use. */
  async scheduler(m: ModelRecord): Promise<ModelScheduler> {
    let s = this.#schedulers.get(m.name);
    if (!s || s.generation !== m.generation) {
      const { maxNumSeqs, maxNumBatchedTokens } = getConfig(this.env);
      const shape = { maxNumSeqs, maxNumBatchedTokens, blockSize: this.blockSize };
      s = new ModelScheduler(m.name, m.generation, this.blockSize, this.prefixStrideBlocks, shape);
      const saved = this.kv.get<SchedulerSnapshot>(`sched/${m.name}`);
      if (saved) s.restore(saved);
      this.#schedulers.set(m.name, s);
    }
    s.profile = m.pdProfile;
    await s.ensureTokenizer(this.env.MODELS, m);
    return s;
  }

  /**
   * A deployment's healthy instances with the load they last pushed (plus work placed since):
   * one marked unhealthy is left out until its time is up or it recovers, unless it is the last
   * of its role (better than none); `exclude` is left out whatever (a migration never goes back).
   */
  deploymentState(d: DeploymentRecord, exclude: string | null = null): DeploymentState {
    const roles = ["colocated", "prefill", "decode", "attention"] as const;
    const now = Date.now();
    const instances = roles.flatMap((role) => {
      const all = (d.instances[role] ?? []).filter((id) => id !== exclude);
      const healthy = all.filter((id) => (this.#unhealthy.get(npuName(id)) ?? 0) <= now);
      return (healthy.length > 0 ? healthy : all).map(
        (instanceId): InstanceState => ({ instanceId, role, ...this.#load.load(instanceId) }),
      );
    });
    return { deploymentId: d.id, mode: d.mode, policy: d.scheduler, instances };
  }

  /**
   * An Npu failed under a task: no new work for it until `until` (or it recovers). False when
   * it was marked already.
   */
  markUnhealthy(npu: string, until: number): boolean {
    const now = Date.now();
    for (const [id, t] of this.#unhealthy) if (t <= now) this.#unhealthy.delete(id);
    const fresh = !this.#unhealthy.has(npu);
    this.#unhealthy.set(npu, until);
    return fresh;
  }

  /** A hung Npu was recovered: it takes work again. */
  markHealthy(npu: string): void {
    this.#unhealthy.delete(npu);
  }

  /**
   * A job was placed: its decision is counted and kept, and its tasks' work counts as load (and
   * its prompt waits to be learnt) until their instances report.
   */
  placed(
    s: PlanInput,
    p: { submitted: Submitted; decision: ScheduleDecision | null; blockKeys: string[] },
    numSeqs: number,
    outstanding: number,
    now: number,
  ): void {
    const model = s.spec.model;
    this.metrics.decided(model, p.decision, now);
    const summary = summarizeDecision(s.spec.requestId, now, model, p.decision, s.pinned);
    if (summary) this.decisions.record(summary);
    for (const [id, l] of this.#learning) {
      if (now - l.at < ESTIMATE_TTL_MS) break; // insertion order: the oldest come first
      this.#learning.delete(id); // its task never reported
    }
    for (const [role, t] of placedTasks(p.submitted.placement)) {
      this.#load.placed(t.taskId, t.instanceId, role === "prefill" ? 1 : numSeqs, outstanding, now);
      if (role !== "decode") {
        this.#learning.set(t.taskId, { model, blockKeys: p.blockKeys, at: now });
      }
    }
  }

  /** Drops what placing a task left behind (it will never run, or it is unknown). */
  forget(taskId: string): void {
    this.#load.forget(taskId);
    this.#learning.delete(taskId);
  }

  /**
   * An instance's report on a task, applied to the records as `applied`: its load is noted, the
   * prefix tree learns the prompt once the task runs, the metrics and the predictor count an end.
   * Returns whether scheduling state changed (to snapshot) and the Analytics Engine point of an
   * ended request.
   */
  reported(
    taskId: string,
    applied: AppliedProgress,
    progress: TaskProgress,
    load: EngineStats | undefined,
    counters: NpuCounters | undefined,
    now: number,
  ): { changed: boolean; point: AnalyticsPoint | null } {
    this.#load.report(taskId, applied.instanceId, load);
    this.metrics.reported(applied.model, applied.instanceId, load, counters, now);
    let changed = false;
    const learn = this.#learning.get(taskId);
    if (learn && progress.status !== undefined) {
      this.#learning.delete(taskId);
      if (progress.status === "running" || progress.status === "succeeded") {
        this.#schedulers.get(learn.model)?.learn(applied.instanceId, learn.blockKeys, now);
        changed = true;
      }
    }
    if (!applied.ended) return { changed, point: null };
    const ended = { ...applied, ...progress };
    this.metrics.taskEnded(ended, now);
    const done = applied.status === "succeeded" && applied.role !== "prefill";
    const { numPromptTokens, numCompletionTokens } = progress;
    if (done && numPromptTokens !== undefined && numCompletionTokens !== undefined) {
      this.#schedulers.get(applied.model)?.observe(numPromptTokens, numCompletionTokens);
    }
    return { changed: true, point: analyticsPoint(ended) };
  }

  /**
   * Writes the metrics to storage within METRICS_SAVE_MS of a change (one write for all the tasks
   * that ended meanwhile), so that a restarted shard resumes its counters close to where they
   * were: a counter that went back would read as a reset to Prometheus. Not once per task: a
   * write holds the JobExecutor's next answers until it is durable (workerd's output gate).
   */
  saveMetricsSoon(): void {
    if (this.#saveTimer !== null) return;
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = null;
      this.#saveMetrics();
    }, METRICS_SAVE_MS);
  }

  #saveMetrics(): void {
    this.kv.put(METRICS_KEY, this.metrics.snapshot());
  }

  /** Writes the metrics and every changed scheduler to storage. */
  snapshot(): void {
    this.#saveMetrics();
    for (const s of this.#schedulers.values()) {
      if (!s.dirty) continue;
      s.dirty = false;
      this.kv.put(`sched/${s.model}`, s.snapshot());
    }
  }
}
