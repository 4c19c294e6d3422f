/**
 * Deployments (DeepFlow's TE groups) under /api/deployments, admin only: create a colocated, PD
 * or moe-attention group of instances for a model (colocated and PD with scaling bounds), list and
 * inspect them with every instance's state, scale-up step timings and live load
 * (deployment-views.ts), scale them by hand, retire them. A moe-attention deployment is one
 * instance of A attention Npus and E Expert DOs, set up (weights loaded on every rank) before the
 * 201; its expert, communication and rebalance routes are in deployments-moe.ts. The request
 * bodies are in deployment-schemas.ts.
 */

import { Hono } from "hono";
import { checkKvCache, resolveKvCache } from "../../shared/engine/kv-policy/spec.ts";
import { AppError } from "../../shared/errors.ts";
import { DEFAULT_SLO, SCALABLE_ROLES } from "../../shared/types/instances.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, getConfig, npu } from "../env.ts";
import { newDeploymentId } from "../ids.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { fitsOneNpu } from "../models.ts";
import { parseJsonBody } from "../openai/parse-body.ts";
import { toKvCacheRequest } from "../openai/schema-fields.ts";

import { requireAdmin } from "./admin.ts";
import { DeploymentSpecSchema, roleCounts, ScaleSchema } from "./deployment-schemas.ts";
import { withLoad } from "./deployment-views.ts";
import { moeDeployments } from "./deployments-moe.ts";

export const deployments = new Hono<AppEnv>();

deployments.use("*", async (c, next) => {
  requireAdmin(c.var.principal.isAdmin);
  await next();
});

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
  for (const r of SCALABLE_ROLES) {
    if (min[r] > counts[r] || counts[r] > max[r]) {
      const msg = `${r}: min_instances <= instances <= max_instances must hold (${min[r]}, ${counts[r]}, ${max[r]})`;
      throw new AppError("invalid_request", msg, "instances");
    }
  }
  const kvCache = toKvCacheRequest(s.kv_cache);
  const blockSize = getConfig(c.env).blockSize;
  const kvError = checkKvCache(resolveKvCache(kvCache, null, blockSize), blockSize);
  if (kvError) throw AppError.from(kvError);
  const m = await clusterManager(c.env).getModel({ name: s.model });
  if (s.mode !== "moe-attention") {
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
    slo: {
      ttftMs: s.slo?.ttft_ms ?? DEFAULT_SLO.ttftMs,
      tpotMs: s.slo?.tpot_ms ?? DEFAULT_SLO.tpotMs,
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
  if (created.moe && m) {
    const setup = await npu(c.env, created.instances.attention?.[0] as string, 0).moeSetup({
      instanceId: created.instances.attention?.[0] as string,
      model: s.model,
      r2Key: m.r2Key,
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

// mounted after the admin check above, which covers these routes too
deployments.route("/", moeDeployments);

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
