/**
 * The routes of a moe-attention deployment under /api/deployments/:id (mounted by
 * deployments.ts, behind its admin check): EPLB's expert view, the ranks' communication
 * counters, and a rebalance by hand.
 */

import { Hono } from "hono";
import { AppError } from "../../shared/errors.ts";
import type { DeploymentRecord } from "../../shared/types/deployments.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, type Env, expert, npu } from "../env.ts";

export const moeDeployments = new Hono<AppEnv>();

/** A moe-attention deployment's rank 0, or a 404. */
async function moeLeader(env: Env, id: string) {
  const d = await clusterManager(env).getDeployment({ id });
  const instanceId = d?.instances.attention?.[0];
  if (d?.status !== "active" || d.mode !== "moe-attention" || !instanceId)
    throw new AppError(
      "not_found",
      `No moe-attention deployment ${id}.`,
      "id",
      "deployment_not_found",
    );
  return npu(env, instanceId, 0);
}

/** EPLB: per-rank token counts per layer since the last rebalance, imbalance, the expert map. */
moeDeployments.get("/:id/experts", async (c) => {
  const view = await (await moeLeader(c.env, c.req.param("id"))).moeExperts();
  return c.json({ object: "deployment.experts", id: c.req.param("id"), ...view });
});

/**
 * The communication counters of a moe-attention deployment's ranks: per (layer, step), bytes and
 * messages sent and received, payload bytes, barrier wait and compute time (the latest 256).
 */
moeDeployments.get("/:id/comm", async (c) => {
  await moeLeader(c.env, c.req.param("id"));
  const d = (await clusterManager(c.env).getDeployment({
    id: c.req.param("id"),
  })) as DeploymentRecord;
  const id = d.instances.attention?.[0] as string;
  const layout = d.moe ?? { numAttention: 0, numExperts: 0 };
  const attention = await Promise.all(
    Array.from({ length: layout.numAttention }, async (_, rank) => ({
      role: "attention",
      rank,
      steps: await npu(c.env, id, rank).moeComm(),
    })),
  );
  const experts = await Promise.all(
    Array.from({ length: layout.numExperts }, async (_, rank) => ({
      role: "expert",
      rank,
      steps: await expert(c.env, id, rank).moeComm(),
    })),
  );
  return c.json({ object: "list", data: [...attention, ...experts] });
});

/** EPLB now: redundant replicas of hot experts, a new map version swapped in between steps. */
moeDeployments.post("/:id/rebalance", async (c) => {
  const r = await (await moeLeader(c.env, c.req.param("id"))).moeRebalance();
  c.var.log.info("deployment.rebalanced", { deploymentId: c.req.param("id"), ...r });
  return c.json({ object: "deployment.rebalance", id: c.req.param("id"), ...r });
});
