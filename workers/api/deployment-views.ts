/**
 * What GET/POST /api/deployments answer for a deployment: its record with each of its instances
 * (state, scale-up step timings, bytes read per weight tier, live load) or, for a moe-attention
 * deployment, each attention and expert rank with its measured weights.
 */

import type { DeploymentRecord } from "../../shared/types/deployments.ts";
import { clusterManager, type Env, expert, npu } from "../env.ts";

/** The ranks of a moe-attention instance: attention Npus and Expert DOs, with measured weights. */
async function moeRanks(env: Env, d: DeploymentRecord) {
  const id = d.instances.attention?.[0];
  if (!id || !d.moe) return [];
  const attention = Array.from({ length: d.moe.numAttention }, async (_, rank) => {
    const s = await npu(env, id, rank).stats();
    return {
      id,
      role: "attention" as const,
      rank,
      numRunning: s.numRunning,
      numWaiting: s.numWaiting,
      numFreeBlocks: s.numFreeBlocks,
      numBlocks: s.numBlocks,
      loaded: s.model !== null,
      residentWeightBytes: s.memory?.residentWeightBytes ?? 0,
      weightBytesRead: s.memory?.weightBytesRead ?? 0,
    };
  });
  const experts = Array.from({ length: d.moe.numExperts }, async (_, rank) => {
    const s = await expert(env, id, rank).stats();
    return {
      id,
      role: "expert" as const,
      rank,
      numRunning: 0,
      numWaiting: 0,
      numFreeBlocks: 0,
      numBlocks: 0,
      loaded: s !== null,
      residentWeightBytes: s?.residentBytes ?? 0,
      weightBytesRead: s?.bytesRead ?? 0,
      experts: s?.experts ?? [],
    };
  });
  return Promise.all([...attention, ...experts]);
}

/**
 * A deployment with each of its instances: state, scale-up step timings, bytes read per weight
 * tier, and the live load of the serving and draining ones.
 */
export async function withLoad(env: Env, d: DeploymentRecord) {
  if (d.mode === "moe-attention") return { ...d, instances: await moeRanks(env, d) };
  const status = await clusterManager(env).deploymentStatus({ id: d.id });
  const instances = await Promise.all(
    (status?.instances ?? []).map(async (i) => {
      const live = i.state === "serving" || i.state === "draining";
      const s = live
        ? await npu(env, i.id)
            .stats()
            .catch(() => null)
        : null;
      return {
        ...i,
        numRunning: s?.numRunning ?? 0,
        numWaiting: s?.numWaiting ?? 0,
        numFreeBlocks: s?.numFreeBlocks ?? 0,
        numBlocks: s?.numBlocks ?? 0,
        loaded: s !== null && s.model !== null,
      };
    }),
  );
  const record = status?.record ?? d;
  return { ...record, serving: record.instances, instances };
}
