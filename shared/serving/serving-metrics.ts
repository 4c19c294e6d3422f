/**
 * The serving metrics (names and meanings after vLLM's `vllm:` ones, prefixed `flowserve:`) and
 * how the JobExecutor updates them from what it already sees: its scheduling decisions and its
 * instances' task reports (with the load and counters they carry). Each JobExecutor shard keeps
 * one `ServingMetrics`; GET /metrics merges the shards' snapshots and renders them. Pure.
 */
import type { EngineStats } from "../engine/engine.ts";
import type { FabricStats, RegionKind } from "../fabric/regions.ts";
import type { DeploymentRecord } from "../types/deployments.ts";
import type { JobKind, RequestStatus, TaskRole } from "../types/records.ts";
import {
  type MetricDef,
  MetricsRegistry,
  type MetricsSnapshot,
  mergeSnapshots,
  renderPrometheus,
} from "./metrics.ts";
import type { ScheduleDecision } from "./scheduling.ts";

/** vLLM's time-to-first-token buckets (seconds). */
const TTFT_BUCKETS = [
  0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
  160, 640, 2560,
];
/** vLLM's time-per-output-token buckets (seconds). */
const TPOT_BUCKETS = [
  0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
];
/** vLLM's request latency buckets (seconds). */
const LATENCY_BUCKETS = [
  0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680,
];

const PER_INSTANCE = ["model", "instance_id"] as const;
const FABRIC = ["instance_id", "kind", "op"] as const;

/** Every metric GET /metrics shows, in order. */
export const SERVING_METRICS = [
  {
    name: "flowserve:requests_total",
    help: "Requests that ended, by model, kind (chat.completion, text_completion) and status (succeeded, failed, cancelled).",
    type: "counter",
    labelNames: ["model", "kind", "status"],
    merge: "sum",
  },
  {
    name: "flowserve:instance_state",
    help: "1 for each instance of an active deployment in its state: serving (a JobExecutor holds a task report from it) or idle (none yet).",
    type: "gauge",
    labelNames: ["model", "deployment_id", "instance_id", "role", "state"],
    merge: "latest",
  },
  {
    name: "flowserve:num_requests_running",
    help: "Sequences in the instance's running batch (its latest report).",
    type: "gauge",
    labelNames: PER_INSTANCE,
    merge: "latest",
  },
  {
    name: "flowserve:num_requests_waiting",
    help: "Sequences waiting for the instance's batch (its latest report).",
    type: "gauge",
    labelNames: PER_INSTANCE,
    merge: "latest",
  },
  {
    name: "flowserve:kv_cache_usage_perc",
    help: "Fraction of the instance's KV blocks in use, 1 - free/total (its latest report).",
    type: "gauge",
    labelNames: PER_INSTANCE,
    merge: "latest",
  },
  {
    name: "flowserve:time_to_first_token_seconds",
    help: "Time from a request's arrival to its first generated token.",
    type: "histogram",
    labelNames: ["model"],
    merge: "sum",
    buckets: TTFT_BUCKETS,
  },
  {
    name: "flowserve:time_per_output_token_seconds",
    help: "Mean time per generated token after the first, per request: (finished - first token) / (completion tokens - 1).",
    type: "histogram",
    labelNames: ["model"],
    merge: "sum",
    buckets: TPOT_BUCKETS,
  },
  {
    name: "flowserve:e2e_request_latency_seconds",
    help: "Time from a request's arrival to its end.",
    type: "histogram",
    labelNames: ["model"],
    merge: "sum",
    buckets: LATENCY_BUCKETS,
  },
  {
    name: "flowserve:prompt_tokens_total",
    help: "Prompt tokens of ended tasks (prefill or colocated).",
    type: "counter",
    labelNames: ["model"],
    merge: "sum",
  },
  {
    name: "flowserve:generation_tokens_total",
    help: "Generated tokens of ended tasks (decode or colocated).",
    type: "counter",
    labelNames: ["model"],
    merge: "sum",
  },
  {
    name: "flowserve:prefix_cache_queries_total",
    help: "Prompt tokens looked up in the instance's prefix cache.",
    type: "counter",
    labelNames: PER_INSTANCE,
    merge: "sum",
  },
  {
    name: "flowserve:prefix_cache_hits_total",
    help: "Prompt tokens served from the instance's prefix cache.",
    type: "counter",
    labelNames: PER_INSTANCE,
    merge: "sum",
  },
  {
    name: "flowserve:scheduler_decisions_total",
    help: "Placements by the deployment's policy, how the instance was chosen (reason) and how the deployment was (group_reason).",
    type: "counter",
    labelNames: ["model", "policy", "reason", "group_reason"],
    merge: "sum",
  },
  {
    name: "flowserve:num_preemptions_total",
    help: "Sequences the instance's scheduler preempted since it started (its latest report).",
    type: "counter",
    labelNames: PER_INSTANCE,
    merge: "latest",
  },
  {
    name: "flowserve:fabric_operations_total",
    help: "Memory-fabric operations on the instance's regions by region kind and op (write, read, free) since it started.",
    type: "counter",
    labelNames: FABRIC,
    merge: "latest",
  },
  {
    name: "flowserve:fabric_bytes_total",
    help: "Memory-fabric bytes written to and read from the instance's regions by region kind and op since it started.",
    type: "counter",
    labelNames: FABRIC,
    merge: "latest",
  },
] as const satisfies readonly MetricDef[];

export type MetricName = (typeof SERVING_METRICS)[number]["name"];

/** Running totals an Npu keeps about itself and pushes with its task reports. */
export interface NpuCounters {
  numPreemptions: number;
  fabric: FabricStats;
}

/** A task report that ended its task, with what the records know of its request. */
export interface EndedTask {
  model: string;
  instanceId: string;
  role: TaskRole;
  numPromptTokens?: number;
  numCachedTokens?: number;
  numCompletionTokens?: number;
  /** Set when this report ended an interactive request. */
  request: EndedRequest | null;
}

/** An interactive request that a task report ended: its kind, status and times (epoch ms). */
export interface EndedRequest {
  kind: JobKind;
  status: RequestStatus;
  receivedAt: number;
  firstTokenAt: number | null;
  finishedAt: number | null;
}

/** One Workers Analytics Engine data point (the dataset binding's `writeDataPoint` argument). */
export interface AnalyticsPoint {
  indexes: [string];
  blobs: string[];
  doubles: number[];
}

/**
 * The data point a task report that ended an interactive request writes to Workers Analytics
 * Engine, when the `ANALYTICS` binding is configured (null for any other report). Index: the
 * model. Blobs: model, kind, status, the instance that answered. Doubles: TTFT and e2e seconds
 * (-1 when unknown), prompt, cached and completion tokens.
 */
export function analyticsPoint(t: EndedTask): AnalyticsPoint | null {
  const r = t.request;
  if (!r) return null;
  const secs = (from: number, to: number | null) => (to === null ? -1 : (to - from) / 1000);
  return {
    indexes: [t.model],
    blobs: [t.model, r.kind, r.status, t.instanceId],
    doubles: [
      secs(r.receivedAt, r.firstTokenAt),
      secs(r.receivedAt, r.finishedAt),
      t.numPromptTokens ?? 0,
      t.numCachedTokens ?? 0,
      t.numCompletionTokens ?? 0,
    ],
  };
}

export class ServingMetrics {
  readonly #r = new MetricsRegistry(SERVING_METRICS);

  #inc(name: MetricName, labels: Record<string, string>, by: number, at: number): void {
    this.#r.inc(name, labels, by, at);
  }

  /** A placement: its decision, or null when a context cache pinned the instance. */
  decided(model: string, d: ScheduleDecision | null, at: number): void {
    const labels = {
      model,
      policy: d?.policy ?? "none",
      reason: d?.reason ?? "context-cache",
      group_reason: d?.groupReason ?? "none",
    };
    this.#inc("flowserve:scheduler_decisions_total", labels, 1, at);
  }

  /** The load and running totals an instance pushed with a task report. */
  reported(
    model: string,
    instanceId: string,
    load: EngineStats | undefined,
    counters: NpuCounters | undefined,
    at: number,
  ): void {
    const labels = { model, instance_id: instanceId };
    if (load) {
      this.#r.set("flowserve:num_requests_running", labels, load.numRunning, at);
      this.#r.set("flowserve:num_requests_waiting", labels, load.numWaiting, at);
      const used = load.numBlocks > 0 ? 1 - load.numFreeBlocks / load.numBlocks : 0;
      this.#r.set("flowserve:kv_cache_usage_perc", labels, used, at);
    }
    if (!counters) return;
    this.#r.set("flowserve:num_preemptions_total", labels, counters.numPreemptions, at);
    for (const [kind, c] of Object.entries(counters.fabric) as [
      RegionKind,
      FabricStats[RegionKind],
    ][]) {
      const ops = { write: c.numWrites, read: c.numReads, free: c.numFrees };
      for (const [op, n] of Object.entries(ops))
        this.#r.set(
          "flowserve:fabric_operations_total",
          { instance_id: instanceId, kind, op },
          n,
          at,
        );
      const bytes = { write: c.bytesWritten, read: c.bytesRead };
      for (const [op, n] of Object.entries(bytes))
        this.#r.set("flowserve:fabric_bytes_total", { instance_id: instanceId, kind, op }, n, at);
    }
  }

  /**
   * A task ended: its tokens (prompt tokens once per job, from the prefill or colocated task;
   * generated ones from the decode or colocated task, which streams all of them), and, when it
   * ended its request, the request's count and latencies.
   */
  taskEnded(t: EndedTask, at: number): void {
    const model = { model: t.model };
    const perInstance = { model: t.model, instance_id: t.instanceId };
    if (t.role !== "decode" && t.numPromptTokens !== undefined) {
      this.#inc("flowserve:prompt_tokens_total", model, t.numPromptTokens, at);
      this.#inc("flowserve:prefix_cache_queries_total", perInstance, t.numPromptTokens, at);
      this.#inc("flowserve:prefix_cache_hits_total", perInstance, t.numCachedTokens ?? 0, at);
    }
    if (t.role !== "prefill" && t.numCompletionTokens !== undefined)
      this.#inc("flowserve:generation_tokens_total", model, t.numCompletionTokens, at);
    const r = t.request;
    if (!r) return;
    this.#inc("flowserve:requests_total", { ...model, kind: r.kind, status: r.status }, 1, at);
    if (r.finishedAt !== null)
      this.#r.observe(
        "flowserve:e2e_request_latency_seconds",
        model,
        (r.finishedAt - r.receivedAt) / 1000,
        at,
      );
    if (r.firstTokenAt === null) return;
    this.#r.observe(
      "flowserve:time_to_first_token_seconds",
      model,
      (r.firstTokenAt - r.receivedAt) / 1000,
      at,
    );
    const n = t.numCompletionTokens ?? 0;
    if (r.finishedAt !== null && n > 1)
      this.#r.observe(
        "flowserve:time_per_output_token_seconds",
        model,
        (r.finishedAt - r.firstTokenAt) / 1000 / (n - 1),
        at,
      );
  }

  snapshot(): MetricsSnapshot {
    return this.#r.snapshot();
  }

  restore(s: MetricsSnapshot): void {
    this.#r.restore(s);
  }
}

/**
 * GET /metrics as text: the shards' snapshots merged (counters and histograms summed, instance
 * values latest). With the active `deployments`: only their instances' series, and the state of
 * each of them (serving once any shard holds a report of it, else idle).
 */
export function renderServingMetrics(
  snaps: readonly MetricsSnapshot[],
  deployments?: readonly DeploymentRecord[],
): string {
  const merged = mergeSnapshots(SERVING_METRICS, snaps);
  if (deployments !== undefined) {
    // series of instances no active deployment has any more (retired, re-uploaded) are dropped
    const active = new Set(deployments.flatMap((d) => Object.values(d.instances).flat()));
    for (const [name, series] of Object.entries(merged)) {
      merged[name] = series.filter(
        (x) => x.labels.instance_id === undefined || active.has(x.labels.instance_id),
      );
    }
  }
  const reported = new Set(
    (merged["flowserve:num_requests_running"] ?? []).map((x) => x.labels.instance_id),
  );
  merged["flowserve:instance_state"] = (deployments ?? []).flatMap((d) =>
    (["colocated", "prefill", "decode", "attention"] as const).flatMap((role) =>
      (d.instances[role] ?? []).map((instanceId) => ({
        labels: {
          model: d.model,
          deployment_id: d.id,
          instance_id: instanceId,
          role,
          state: reported.has(instanceId) ? "serving" : "idle",
        },
        value: 1,
        at: 0,
      })),
    ),
  );
  return renderPrometheus(SERVING_METRICS, merged);
}
