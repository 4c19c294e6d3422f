/**
 * DeepFlow's management and request API under /api: model uploads (admin; multipart in
 * uploads.ts), request records
 * (tenant-scoped). Later issues add deployments, context caches and batch requests here.
 */
import { Hono } from "hono";
import { AppError } from "../../shared/errors.ts";
import { jobExecutorName } from "../../shared/protocol/names.ts";
import { MAX_DECISIONS, mergeDecisions } from "../../shared/serving/decision-log.ts";
import { checkPdProfile, type PdProfile } from "../../shared/serving/pd-profile.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, getConfig, jobExecutorFor, npu } from "../env.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { checkModelName, modelObject, resolveModel, storeModel } from "../models.ts";
import { requireAdmin } from "./admin.ts";
import { contextCaches } from "./context-caches.ts";
import { deployments } from "./deployments.ts";
import { faults } from "./faults.ts";
import { requests } from "./requests.ts";
import { uploads } from "./uploads.ts";

const REQUEST_ID_RE = /^req_[0-9a-f]{32}$/;

export const api = new Hono<AppEnv>();

api.route("/deployments", deployments);
api.route("/requests", requests);
api.route("/context-caches", contextCaches);
api.route("/faults", faults);
api.route("/models", uploads);

api.put("/models/:name", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const name = checkModelName(c.req.param("name"));
  const bytes = await readBody(c.req.raw, getConfig(c.env).maxUploadBytes);
  if (bytes.byteLength === 0)
    throw new AppError("invalid_request", "the body must be the GGUF file's bytes", "body");
  const record = await storeModel(c.env, name, bytes, c.var.principal.tenant);
  c.var.log.info("model.uploaded", { model: name, sizeBytes: bytes.byteLength });
  return c.json(modelObject(record), 201);
});

api.get("/models", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  return c.json({ object: "list", data: await clusterManager(c.env).listModels() });
});

/** The pre-warmed pool: its Npus' instance ids and states; `?fill=1` tops it up first (admin). */
api.get("/pool", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const fill = c.req.query("fill") === "1";
  return c.json({ object: "list", data: await clusterManager(c.env).poolStatus({ fill }) });
});

/** Stages a model's weights in its WeightCache ahead of a scale-up (admin). */
api.post("/models/:name/stage", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const model = await resolveModel(c.env, c.req.param("name"));
  const staged = await clusterManager(c.env).stageWeights({ model: model.name });
  return c.json({ model: model.name, staged: staged !== null, sizeBytes: staged?.sizeBytes ?? 0 });
});

/** Live state of a model's instances: load, KV blocks, memory, recent steps (admin). */
api.get("/models/:name/instances", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const model = await resolveModel(c.env, c.req.param("name"));
  const ids = model.deployments.flatMap((d) => [
    ...d.instances.colocated,
    ...d.instances.prefill,
    ...d.instances.decode,
    ...(d.instances.attention ?? []),
  ]);
  const data = await Promise.all(
    ids.map(async (id) => ({ id, ...(await npu(c.env, id).stats()) })),
  );
  return c.json({ object: "list", data });
});

/** The model's colocated-vs-PD heatmap, as measured by `npm run profile:pd` (admin). */
api.put("/models/:name/pd-profile", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const name = c.req.param("name");
  await resolveModel(c.env, name);
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  let profile: PdProfile;
  try {
    profile = { ...(JSON.parse(raw) as PdProfile), model: name };
  } catch {
    throw new AppError("invalid_request", "the body must be a JSON PD profile", "body");
  }
  const problem = checkPdProfile(profile);
  if (problem) throw new AppError("invalid_request", `invalid PD profile: ${problem}`, "body");
  await clusterManager(c.env).setPdProfile({ name, profile });
  return c.json(profile);
});

api.get("/models/:name/pd-profile", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const model = await resolveModel(c.env, c.req.param("name"));
  if (!model.pdProfile)
    throw new AppError(
      "not_found",
      `Model ${model.name} has no PD profile; run npm run profile:pd.`,
      "name",
    );
  return c.json(model.pdProfile);
});

/** The scheduler's last placements across the JobExecutor shards, newest first (admin). */
api.get("/scheduler/decisions", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const asked = Number.parseInt(c.req.query("limit") ?? "", 10);
  const limit = Number.isFinite(asked)
    ? Math.min(Math.max(asked, 1), MAX_DECISIONS)
    : MAX_DECISIONS;
  const shards = getConfig(c.env).jobExecutorShards;
  const lists = await Promise.all(
    Array.from({ length: shards }, (_, i) =>
      c.env.JOB_EXECUTOR.getByName(jobExecutorName(i)).decisions({ limit }),
    ),
  );
  return c.json({ object: "list", data: mergeDecisions(lists, limit) });
});

/** Any tenant's request with its jobs and tasks (admin; the dashboard's timeline). */
api.get("/admin/requests/:id", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  const id = c.req.param("id");
  const record = REQUEST_ID_RE.test(id)
    ? await jobExecutorFor(c.env, id).getRequestAnyTenant({ requestId: id })
    : null;
  if (!record)
    throw new AppError("not_found", `No request with id ${id}.`, "id", "request_not_found");
  return c.json(record);
});

api.get("/requests/:id", async (c) => {
  const id = c.req.param("id");
  const record = REQUEST_ID_RE.test(id)
    ? await jobExecutorFor(c.env, id).getRequest({ requestId: id, tenant: c.var.principal.tenant })
    : null;
  if (!record)
    throw new AppError("not_found", `No request with id ${id}.`, "id", "request_not_found");
  return c.json(record);
});
