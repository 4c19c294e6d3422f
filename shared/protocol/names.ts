/** The only place DO instance names are built (for `getByName`). Pure. */

export const CLUSTER_MANAGER_NAME = "cluster";

export function npuName(instanceId: string, shardIndex = 0): string {
  return `${instanceId}/npu/${shardIndex}`;
}

export function jobExecutorName(shard: number): string {
  return `je/${shard}`;
}

/** Stable shard of a request id (FNV-1a), so any worker finds a request's records. */
export function requestShard(requestId: string, numShards: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < requestId.length; i++) {
    h ^= requestId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % numShards;
}

export function instanceId(model: string, index: number): string {
  return `inst_${model}_${index}`;
}

/** The Npus of the pre-warmed pool are instances of their own, leased whole. */
export function poolInstanceId(index: number): string {
  return instanceId("pool", index);
}

/** The staging tier of one generation of a model's weights. */
export function weightCacheName(model: string, generation: number): string {
  return `wc/${model}/${generation}`;
}

/** The Expert DO of expert rank `rank` of a moe-attention instance. */
export function expertName(instanceId: string, rank: number): string {
  return `${instanceId}/expert/${rank}`;
}
