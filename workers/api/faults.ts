/**
 * POST /api/faults (admin; refused unless FAULT_INJECTION is on): makes a chosen Npu, Expert,
 * JobExecutor or ClusterManager throw, hang its engine loop (Npu) or step handling (Expert), or
 * drop its in-memory state (shared/types/faults.ts). Body: {"target": "npu", "instance":
 * "<instance id>", "fault": "hang"}; an Expert takes the moe-attention instance and "rank"
 * (default 0); a JobExecutor takes "shard" (default 0). Answers 200 with what was injected.
 */
import { Hono } from "hono";
import { z } from "zod";
import { AppError, type Result } from "../../shared/errors.ts";
import { jobExecutorName } from "../../shared/protocol/names.ts";
import { FAULT_KINDS, FAULT_TARGETS } from "../../shared/types/faults.ts";
import type { AppEnv } from "../app-env.ts";
import { clusterManager, expert, getConfig, npu } from "../env.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { parseJsonBody } from "../openai/parse-body.ts";
import { requireAdmin } from "./admin.ts";

const FaultSchema = z.object({
  target: z.enum(FAULT_TARGETS),
  fault: z.enum(FAULT_KINDS),
  instance: z.string().min(1).max(200).optional(),
  shard: z.number().int().min(0).max(255).optional(),
  rank: z.number().int().min(0).max(1023).optional(),
});

export const faults = new Hono<AppEnv>();

faults.post("/", async (c) => {
  requireAdmin(c.var.principal.isAdmin);
  if (!getConfig(c.env).faultInjection) {
    throw new AppError(
      "permission",
      "Fault injection is off on this deployment (set the FAULT_INJECTION var to true).",
      null,
      "fault_injection_disabled",
    );
  }
  const raw = new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES));
  const parsed = parseJsonBody(raw, FaultSchema);
  if (!parsed.ok) throw AppError.from(parsed.error);
  const f = parsed.value;
  if ((f.target === "npu" || f.target === "expert") && f.instance === undefined) {
    throw new AppError("invalid_request", `an ${f.target} fault needs 'instance'`, "instance");
  }
  if (f.shard !== undefined && f.shard >= getConfig(c.env).jobExecutorShards) {
    throw new AppError("invalid_request", `no JobExecutor shard ${f.shard}`, "shard");
  }
  const q = { fault: f.fault };
  const call = (): Promise<Result<null>> =>
    f.target === "npu"
      ? npu(c.env, f.instance as string).injectFault(q)
      : f.target === "expert"
        ? expert(c.env, f.instance as string, f.rank ?? 0).injectFault(q)
        : f.target === "job_executor"
          ? c.env.JOB_EXECUTOR.getByName(jobExecutorName(f.shard ?? 0)).injectFault(q)
          : clusterManager(c.env).injectFault(q);
  let res: Result<null>;
  try {
    res = await call();
  } catch (e) {
    // drop_state resets the object inside the call, which then throws to its caller
    if (f.fault !== "drop_state") throw e;
    res = { ok: true, value: null };
  }
  if (!res.ok) throw AppError.from(res.error);
  c.var.log.warn("fault.injected", {
    target: f.target,
    fault: f.fault,
    instance: f.instance,
    rank: f.rank,
  });
  return c.json({ object: "fault", ...f, injected: true });
});
