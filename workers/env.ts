/**
 * The worker's bindings and its parsed configuration. `getConfig(env)` validates the [vars]
 * once per isolate and fails loudly on bad values.
 */
import type { ClusterManager } from "../durable-objects/cluster-manager.ts";
import type { JobExecutor } from "../durable-objects/job-executor.ts";
import type { Npu } from "../durable-objects/npu.ts";
import { parseServingConfig, type ServingConfig } from "../shared/config.ts";
import {
  CLUSTER_MANAGER_NAME,
  jobExecutorName,
  npuName,
  requestShard,
} from "../shared/protocol/names.ts";

export interface Env {
  NPU: DurableObjectNamespace<Npu>;
  JOB_EXECUTOR: DurableObjectNamespace<JobExecutor>;
  CLUSTER_MANAGER: DurableObjectNamespace<ClusterManager>;
  MODELS: R2Bucket;
  DEFAULT_MODEL?: string;
  NPU_MEMORY_BUDGET_MB?: string;
  MAX_NUM_SEQS?: string;
  MAX_NUM_BATCHED_TOKENS?: string;
  KV_BLOCK_SIZE?: string;
  JOB_EXECUTOR_SHARDS?: string;
  MAX_BODY_MB?: string;
  LOG_LEVEL?: string;
  /** Secret: comma-separated `tenant:key` pairs. */
  API_KEYS?: string;
  /** Secret: comma-separated admin keys (management routes). */
  ADMIN_API_KEYS?: string;
}

let cached: { env: Env; config: ServingConfig } | null = null;

export function getConfig(env: Env): ServingConfig {
  if (cached?.env !== env)
    cached = { env, config: parseServingConfig(env as unknown as Record<string, unknown>) };
  return cached.config;
}

export function clusterManager(env: Env) {
  return env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);
}

export function jobExecutorFor(env: Env, requestId: string) {
  const shards = getConfig(env).jobExecutorShards;
  return env.JOB_EXECUTOR.getByName(jobExecutorName(requestShard(requestId, shards)));
}

export function npu(env: Env, instanceId: string, shard = 0) {
  return env.NPU.getByName(npuName(instanceId, shard));
}
