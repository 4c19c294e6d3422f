/**
 * Deployments (DeepFlow's TE groups) under /api/deployments, admin only: create a colocated, PD
 * or moe-attention group of instances for a model, list and inspect them with live load, retire
 * them. A moe-attention deployment is one instance of A attention Npus and E Expert DOs, set up
 * (weights loaded on every rank) before the 201.
 */

import { Hono } from "hono";
import { z } from "zod";
import { AppError } from "../../shared/errors.ts";
import {
  DEPLOYMENT_MODES,
  type DeploymentRecord,
  SCHEDULER_POLICIES,
} from "../../shared/types/deployments.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, type Env, expert, getConfig, npu } from "../env.ts";
import { newDeploymentId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { fitsOneNpu, r2KeyFor } from "../models.ts";
import { parseJsonBody } from "../openai/parse-body.ts";

import { requireAdmin } from "./admin.ts";

const count = z.number().int().min(1).max(16);

const DeploymentSpecSchema = z
  .object({
    model: z.string().min(1),
    mode: z.enum(DEPLOYMENT_MODES),
    instances: z.object({
      colocated: count.optional(),
      prefill: count.optional(),
      decode: count.optional(),
      attention: count.optional(),
      experts: count.optional(),
    }),
    scheduler: z.enum(SCHEDULER_POLICIES).default("deepflow"),
  })
  .superRefine((s, ctx) => {
    const i = s.instances;
    const moeCounts = i.attention !== undefined || i.experts !== undefined;
    if (
      s.mode === "moe-attention" &&
      (i.attention === undefined ||
        i.experts === undefined ||
        i.colocated !== undefined ||
        i.prefill !== undefined ||
        i.decode !== undefined)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["instances"],
        message: 'a moe-attention deployment takes {"attention": A, "experts": E}',
      });
    }
    if (
      s.mode === "colocated" &&
      (i.colocated === undefined || i.prefill !== undefined || i.decode !== undefined || moeCounts)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["instances"],
        message: 'a colocated deployment takes {"colocated": N}',
      });
    }
    if (
      s.mode === "pd" &&
      (i.prefill === undefined || i.decode === undefined || i.colocated !== undefined || moeCounts)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["instances"],
        message: 'a PD deployment takes {"prefill": N, "decode": M}',
      });
    }
  });

export const deployments = new Hono<AppEnv>();

deployments.use("*", async (c, next) => {
  requireAdmin(c.var.principal.isAdmin);
  await next();
});

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
      experts: s?.experts ?? [],
    };
  });
  return Promise.all([...attention, ...experts]);
}

/** A deployment with the live load of each of its instances. */
async function withLoad(env: Env, d: DeploymentRecord) {
  if (d.mode === "moe-attention") return { ...d, instances: await moeRanks(env, d) };
  const roles = ["colocated", "prefill", "decode"] as const;
  const instances = await Promise.all(
    roles.flatMap((role) =>
      d.instances[role].map(async (id) => {
        const s = await npu(env, id).stats();
        return {
          id,
          role,
          numRunning: s.numRunning,
          numWaiting: s.numWaiting,
          numFreeBlocks: s.numFreeBlocks,
          numBlocks: s.numBlocks,
          loaded: s.model !== null,
        };
      }),
    ),
  );
  return { ...d, instances };
}

deployments.post("/", async (c) => {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed = parseJsonBody(raw, DeploymentSpecSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const s = parsed.value;
  if (s.mode !== "moe-attention") {
    const m = await clusterManager(c.env).getModel({ name: s.model });
    if (m && !fitsOneNpu(c.env, m.summary)) {
      const need = ((m.summary.memoryNeededBytes ?? 0) / 2 ** 20).toFixed(1);
      const budget = (getConfig(c.env).npuMemoryBudgetBytes / 2 ** 20).toFixed(1);
      throw new AppError(
        "invalid_request",
        `model ${s.model} needs ${need} MiB in one NPU but the NPU budget is ${budget} MiB: ` +
          "deploy it as moe-attention, its experts spread over Expert DOs",
        "mode",
        "model_too_large",
      );
    }
  }
  const created = await clusterManager(c.env).addDeployment({
    id: newDeploymentId(),
    model: s.model,
    mode: s.mode,
    scheduler: s.scheduler,
    counts: {
      colocated: s.instances.colocated ?? 0,
      prefill: s.instances.prefill ?? 0,
      decode: s.instances.decode ?? 0,
    },
    ...(s.mode === "moe-attention"
      ? { moe: { numAttention: s.instances.attention ?? 1, numExperts: s.instances.experts ?? 1 } }
      : {}),
  });
  if (!created)
    throw new AppError(
      "not_found",
      `The model \`${s.model}\` does not exist.`,
      "model",
      "model_not_found",
    );
  if (created.moe) {
    const setup = await npu(c.env, created.instances.attention?.[0] as string, 0).moeSetup({
      instanceId: created.instances.attention?.[0] as string,
      model: s.model,
      r2Key: r2KeyFor(s.model),
      numAttention: created.moe.numAttention,
      numExperts: created.moe.numExperts,
    });
    if (!setup.ok) {
      await clusterManager(c.env).deleteDeployment({ id: created.id });
      const e = setup.error;
      // a rank over its memory budget: more expert ranks would fit, so it is the spec's fault
      if (e.code === "model_too_large")
        throw new AppError("invalid_request", e.message, "instances", e.code);
      throw AppError.from(e);
    }
  }
  c.var.log.info("deployment.created", { deploymentId: created.id, model: s.model, mode: s.mode });
  return c.json(await withLoad(c.env, created), 201);
});

deployments.get("/", async (c) => {
  const list = await clusterManager(c.env).listDeployments();
  return c.json({ object: "list", data: await Promise.all(list.map((d) => withLoad(c.env, d))) });
});

deployments.get("/:id", async (c) => {
  const d = await clusterManager(c.env).getDeployment({ id: c.req.param("id") });
  if (d?.status !== "active")
    throw new AppError(
      "not_found",
      `No deployment ${c.req.param("id")}.`,
      "id",
      "deployment_not_found",
    );
  return c.json(await withLoad(c.env, d));
});

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
deployments.get("/:id/experts", async (c) => {
  const view = await (await moeLeader(c.env, c.req.param("id"))).moeExperts();
  return c.json({ object: "deployment.experts", id: c.req.param("id"), ...view });
});

/**
 * The communication counters of a moe-attention deployment's ranks: per (layer, step), bytes and
 * messages sent and received, payload bytes, barrier wait and compute time (the latest 256).
 */
deployments.get("/:id/comm", async (c) => {
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
deployments.post("/:id/rebalance", async (c) => {
  const r = await (await moeLeader(c.env, c.req.param("id"))).moeRebalance();
  c.var.log.info("deployment.rebalanced", { deploymentId: c.req.param("id"), ...r });
  return c.json({ object: "deployment.rebalance", id: c.req.param("id"), ...r });
});

deployments.delete("/:id", async (c) => {
  const d = await clusterManager(c.env).deleteDeployment({ id: c.req.param("id") });
  if (!d)
    throw new AppError(
      "not_found",
      `No deployment ${c.req.param("id")}.`,
      "id",
      "deployment_not_found",
    );
  // no new tasks are placed on it; tasks already running finish on their NPUs
  return c.json({ id: d.id, object: "deployment", deleted: true });
});
