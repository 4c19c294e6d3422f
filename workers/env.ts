/** Stub helpers typed by DO class, and (re-exported) the bindings and parsed configuration. */
import type { Env } from "../durable-objects/env.ts";
import { type ServingConfig, servingConfig } from "../shared/config.ts";
import {
  CLUSTER_MANAGER_NAME,
  expertName,
  jobExecutorName,
  npuName,
  requestShard,
} from "../shared/protocol/names.ts";

export type { Env };

/** The validated [vars], parsed once per isolate. @throws Error on bad values. */
export function getConfig(env: Env): ServingConfig {
  return servingConfig(env);
}

export function clusterManager(env: Env) {
  return env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);
}

export function jobExecutorFor(env: Env, requestId: string) {
  const shards = getConfig(env).jobExecutorShards;
  return env.JOB_EXECUTOR.getByName(jobExecutorName(requestShard(requestId, shards)));
}

export function expert(env: Env, instanceId: string, rank: number) {
  return env.EXPERT.getByName(expertName(instanceId, rank));
}

export function npu(env: Env, instanceId: string, shard = 0) {
  return env.NPU.getByName(npuName(instanceId, shard));
}
