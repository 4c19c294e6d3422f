/**
 * Request bodies of /api/deployments: the deployment spec of a create (instance counts per mode,
 * scaling bounds, SLO targets, scheduler, default KV-cache policy) and the target of a scale by hand, with
 * `roleCounts` turning a bound into counts per role.
 */

import { z } from "zod";
import { DEPLOYMENT_MODES, SCHEDULER_POLICIES } from "../../shared/types/deployments.ts";
import {
  LOAD_PATHS,
  MAX_INSTANCES_PER_ROLE,
  MAX_SLO_TPOT_MS,
  MAX_SLO_TTFT_MS,
  type RoleCounts,
} from "../../shared/types/instances.ts";
import { KvCacheSchema } from "../openai/schema-fields.ts";

const count = z.number().int().min(0).max(MAX_INSTANCES_PER_ROLE);
const pdCounts = z.object({ prefill: count, decode: count }).strict();
/** A bound: a number for a colocated deployment, `{"prefill": N, "decode": M}` for PD. */
const bound = z.union([count, pdCounts]);

export const DeploymentSpecSchema = z
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
    /** Latency objectives for the autoscaler (each defaults to DEFAULT_SLO's). */
    slo: z
      .object({
        ttft_ms: z.number().int().min(1).max(MAX_SLO_TTFT_MS).optional(),
        tpot_ms: z.number().int().min(1).max(MAX_SLO_TPOT_MS).optional(),
      })
      .strict()
      .optional(),
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

/** A bound as counts per role (`fallback` when absent). */
export function roleCounts(b: z.infer<typeof bound> | undefined, fallback: RoleCounts): RoleCounts {
  if (b === undefined) return fallback;
  if (typeof b === "number") return { colocated: b, prefill: 0, decode: 0 };
  return { colocated: 0, prefill: b.prefill, decode: b.decode };
}

/**
 * `load_path` forces how new instances load (benchmarks; default `auto`); `wait: true` answers
 * once the target serves.
 */
const loadPath = { load_path: z.enum(LOAD_PATHS).optional(), wait: z.boolean().optional() };
export const ScaleSchema = z.union([
  z.object({ instances: count, ...loadPath }).strict(),
  z.object({ prefill: count, decode: count, ...loadPath }).strict(),
]);
