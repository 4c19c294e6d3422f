/**
 * Deployments (DeepFlow's TE groups) under /api/deployments, admin only: create a colocated or
 * PD group of instances for a model, list and inspect them with live load, retire them.
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
import type { AppEnv } from "../app-env.ts";
import { clusterManager, type Env, getConfig, npu } from "../env.ts";
import { newDeploymentId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { parseJsonBody } from "../openai/parse-body.ts";
import { KvCacheSchema, toKvCacheRequest } from "../openai/schemas.ts";

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
    }),
    scheduler: z.enum(SCHEDULER_POLICIES).default("deepflow"),
    /** The KV-cache policy its requests get unless they send their own `kv_cache`. */
    kv_cache: KvCacheSchema.nullish(),
  })
  .superRefine((s, ctx) => {
    const i = s.instances;
    if (
      s.mode === "colocated" &&
      (i.colocated === undefined || i.prefill !== undefined || i.decode !== undefined)
    ) {
      ctx.addIssue({
        code: "custom",
        path: ["instances"],
        message: 'a colocated deployment takes {"colocated": N}',
      });
    }
    if (
      s.mode === "pd" &&
      (i.prefill === undefined || i.decode === undefined || i.colocated !== undefined)
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

/** A deployment with the live load of each of its instances. */
async function withLoad(env: Env, d: DeploymentRecord) {
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
  const kvCache = toKvCacheRequest(s.kv_cache);
  const blockSize = getConfig(c.env).blockSize;
  const kvError = checkKvCache(resolveKvCache(kvCache, null, blockSize), blockSize);
  if (kvError) throw AppError.from(kvError);
  const created = await clusterManager(c.env).addDeployment({
    id: newDeploymentId(),
    model: s.model,
    mode: s.mode,
    scheduler: s.scheduler,
    kvCache: toKvCacheRequest(s.kv_cache),
    counts: {
      colocated: s.instances.colocated ?? 0,
      prefill: s.instances.prefill ?? 0,
      decode: s.instances.decode ?? 0,
    },
  });
  if (!created)
    throw new AppError(
      "not_found",
      `The model \`${s.model}\` does not exist.`,
      "model",
      "model_not_found",
    );
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
