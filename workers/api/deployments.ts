/**
 * Deployments (DeepFlow's TE groups) under /api/deployments, admin only: create a colocated, PD
 * or moe-attention group of instances for a model (colocated and PD with scaling bounds), list and
 * inspect them with every instance's state, scale-up step timings and live load, scale them by
 * hand, retire them. A moe-attention deployment is one instance of A attention Npus and E Expert
 * DOs, set up (weights loaded on every rank) before the 201.
 */

import { Hono } from "hono";
import { z } from "zod";
import { checkKvCache, resolveKvCache } from "../../shared/engine/kv-policy/spec.ts";
import { AppError } from "../../shared/errors.ts";
import {
  DEPLOYMENT_MODES,
  type DeploymentRecord,
  SCHEDULER_POLICIES,
} from "../../shared/types/deployments.ts";
import {
  LOAD_PATHS,
  MAX_INSTANCES_PER_ROLE,
  type RoleCounts,
} from "../../shared/types/instances.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, type Env, expert, getConfig, npu } from "../env.ts";
import { newDeploymentId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { fitsOneNpu, r2KeyFor } from "../models.ts";
import { parseJsonBody } from "../openai/parse-body.ts";
import { KvCacheSchema, toKvCacheRequest } from "../openai/schemas.ts";

import { requireAdmin } from "./admin.ts";

const count = z.number().int().min(0).max(MAX_INSTANCES_PER_ROLE);
const pdCounts = z.object({ prefill: count, decode: count }).strict();
/** A bound: a number for a colocated deployment, `{"prefill": N, "decode": M}` for PD. */
const bound = z.union([count, pdCounts]);

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
    min_instances: bound.optional(),
    max_instances: bound.optional(),
    scheduler: z.enum(SCHEDULER_POLICIES).default("deepflow"),
    /** The KV-cache policy its requests get unless they send their own `kv_cache`. */
    kv_cache: KvCacheSchema.nullish(),
  })
  .superRefine((s, ctx) => {
    for (const key of ["min_instances", "max_instances"] as const) {
      const b = s[key];
      if (b === undefined) continue;
      if ((s.mode === "colocated") !== (typeof b === "number")) {
        const want = s.mode === "colocated" ? "a number" : '{"prefill": N, "decode": M}';
        ctx.addIssue({ code: "custom", path: [key], message: `this deployment takes ${want}` });
      }
    }
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

/** A bound as counts per role (`fallback` when absent). */
function roleCounts(b: z.infer<typeof bound> | undefined, fallback: RoleCounts): RoleCounts {
  if (b === undefined) return fallback;
  if (typeof b === "number") return { colocated: b, prefill: 0, decode: 0 };
  return { colocated: 0, prefill: b.prefill, decode: b.decode };
}

const ROLES = ["colocated", "prefill", "decode"] as const;

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

/**
 * A deployment with each of its instances: state, scale-up step timings, bytes read per weight
 * tier, and the live load of the serving and draining ones.
 */
async function withLoad(env: Env, d: DeploymentRecord) {
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

deployments.post("/", async (c) => {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed = parseJsonBody(raw, DeploymentSpecSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const s = parsed.value;
  const counts = {
    colocated: s.instances.colocated ?? 0,
    prefill: s.instances.prefill ?? 0,
    decode: s.instances.decode ?? 0,
  };
  const min = roleCounts(s.min_instances, counts);
  const max = roleCounts(s.max_instances, counts);
  for (const r of ROLES) {
    if (min[r] > counts[r] || counts[r] > max[r]) {
      const msg = `${r}: min_instances <= instances <= max_instances must hold (${min[r]}, ${counts[r]}, ${max[r]})`;
      throw new AppError("invalid_request", msg, "instances");
    }
  }
  const kvCache = toKvCacheRequest(s.kv_cache);
  const blockSize = getConfig(c.env).blockSize;
  const kvError = checkKvCache(resolveKvCache(kvCache, null, blockSize), blockSize);
  if (kvError) throw AppError.from(kvError);
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
    kvCache,
    counts,
    min,
    max,
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

/**
 * `load_path` forces how new instances load (benchmarks; default `auto`); `wait: true` answers
 * once the target serves.
 */
const loadPath = { load_path: z.enum(LOAD_PATHS).optional(), wait: z.boolean().optional() };
const ScaleSchema = z.union([
  z.object({ instances: count, ...loadPath }).strict(),
  z.object({ prefill: count, decode: count, ...loadPath }).strict(),
]);

/** Sets a deployment's instance target by hand: new instances load eagerly, removed ones drain. */
deployments.post("/:id/scale", async (c) => {
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed = parseJsonBody(raw, ScaleSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const id = c.req.param("id");
  const cm = clusterManager(c.env);
  const d = await cm.getDeployment({ id });
  if (d?.status !== "active")
    throw new AppError("not_found", `No deployment ${id}.`, "id", "deployment_not_found");
  const b = parsed.value;
  if (d.mode === "moe-attention")
    throw new AppError(
      "invalid_request",
      `deployment ${id} is moe-attention: its size is fixed`,
      "id",
    );
  if ("instances" in b !== (d.mode === "colocated")) {
    const want = d.mode === "colocated" ? '{"instances": N}' : '{"prefill": N, "decode": M}';
    throw new AppError("invalid_request", `deployment ${id} is scaled with ${want}`, "instances");
  }
  const target =
    "instances" in b
      ? roleCounts(b.instances, d.scaling.target)
      : roleCounts({ prefill: b.prefill, decode: b.decode }, d.scaling.target);
  const r = await cm.scaleDeployment({ id, target, path: b.load_path, wait: b.wait });
  if (!r.ok) throw AppError.from(r.error);
  c.var.log.info("deployment.scaled", { deploymentId: id, target });
  return c.json({
    ...(await withLoad(c.env, d)),
    started: r.value.started,
    draining: r.value.draining,
  });
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
