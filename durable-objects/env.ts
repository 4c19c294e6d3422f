/**
 * The bindings every Worker and Durable Object of this project sees (wrangler.toml), and the
 * parsed serving configuration (shared/config.ts). The worker imports only the `Env` type.
 */
import { type ServingConfig, servingConfig } from "../shared/config.ts";
import type { ClusterManager } from "./cluster-manager.ts";
import type { Expert } from "./expert.ts";
import type { JobExecutor } from "./job-executor.ts";
import type { Npu } from "./npu.ts";
import type { WeightCache } from "./weight-cache.ts";

export interface Env {
  NPU: DurableObjectNamespace<Npu>;
  EXPERT: DurableObjectNamespace<Expert>;
  JOB_EXECUTOR: DurableObjectNamespace<JobExecutor>;
  CLUSTER_MANAGER: DurableObjectNamespace<ClusterManager>;
  WEIGHT_CACHE: DurableObjectNamespace<WeightCache>;
  MODELS: R2Bucket;
  /** Optional Workers Analytics Engine dataset: one data point per ended request. */
  ANALYTICS?: AnalyticsEngineDataset;
  DEFAULT_MODEL?: string;
  NPU_MEMORY_BUDGET_MB?: string;
  NPU_KV_CACHE_MB?: string;
  POOL_SIZE?: string;
  SCALE_TO_ZERO_AFTER_S?: string;
  MAX_NUM_SEQS?: string;
  MAX_NUM_BATCHED_TOKENS?: string;
  KV_BLOCK_SIZE?: string;
  PREFIX_INDEX_TOKENS?: string;
  JOB_EXECUTOR_SHARDS?: string;
  MAX_BODY_MB?: string;
  LOG_LEVEL?: string;
  /** `<tenant>=<requests per minute>/<concurrent requests>, ...`; `*` for every other tenant. */
  TENANT_LIMITS?: string;
  /** Engine-loop milliseconds per invocation of an Npu before it continues from an alarm. */
  NPU_SLICE_MS?: string;
  /** "true" opens POST /api/faults (fault injection for tests and drills). */
  FAULT_INJECTION?: string;
  /** Secret: comma-separated `tenant:key` pairs. */
  API_KEYS?: string;
  /** Secret: comma-separated admin keys (management routes). */
  ADMIN_API_KEYS?: string;
  /** Secret: a key for Prometheus scrapers; it opens GET /metrics and nothing else. */
  METRICS_KEY?: string;
}

/** The validated [vars], parsed once per isolate. @throws Error on bad values. */
export function getConfig(env: Env): ServingConfig {
  return servingConfig(env);
}
