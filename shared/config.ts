/**
 * Serving configuration from [vars] (strings), validated with zod: numbers coerced, defaults
 * applied, relations checked. Engine code receives the parsed object, never `env`.
 */
import { z } from "zod";
import type { ExpertWatchOptions } from "./serving/expert-watch.ts";
import { DEFAULT_PREFIX_INDEX_TOKENS } from "./serving/prefix-tree.ts";
import {
  DEFAULT_TENANT_LIMITS,
  parseTenantLimits,
  type TenantLimits,
} from "./serving/tenant-limits.ts";

const int = (def: number, min: number, max: number) =>
  z.coerce.number().int().min(min).max(max).default(def);

export const ServingConfigSchema = z
  .object({
    DEFAULT_MODEL: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/)
      .default("lemma-moe"),
    NPU_MEMORY_BUDGET_MB: int(96, 8, 4096),
    NPU_KV_CACHE_MB: int(8, 1, 4096),
    POOL_SIZE: int(8, 0, 1024),
    SCALE_TO_ZERO_AFTER_S: int(300, 1, 86_400),
    MAX_NUM_SEQS: int(32, 1, 1024),
    MAX_NUM_BATCHED_TOKENS: int(256, 16, 65536),
    KV_BLOCK_SIZE: int(16, 1, 1024),
    /** Prompt tokens per prefix-tree key (shared/serving/prefix-tree.ts), a KV_BLOCK_SIZE multiple. */
    PREFIX_INDEX_TOKENS: int(DEFAULT_PREFIX_INDEX_TOKENS, 1, 1_048_576),
    JOB_EXECUTOR_SHARDS: int(1, 1, 256),
    MAX_BODY_MB: int(64, 1, 1024),
    LOG_LEVEL: z.enum(["debug", "info", "warn", "error"]).default("info"),
    /**
     * Engine-loop CPU time one invocation of an Npu may use, counted by the steps' work
     * (serving/step-cost.ts) and by the clock; then the loop continues from an alarm.
     */
    NPU_SLICE_MS: int(5_000, 1, 300_000),
    /** moe-attention: how often rank 0 probes the expert ranks while a group step is in flight. */
    EXPERT_PROBE_MS: int(250, 10, 10_000),
    /** moe-attention: an expert rank with work and no progress this long is hung (failed over). */
    EXPERT_HUNG_AFTER_MS: int(2_000, 100, 25_000),
    /** Micro-batches per moe-attention attention rank: 2 ping-pong (shared/moe/ping-pong.ts). */
    MOE_MICRO_BATCHES: int(1, 1, 2),
    /** "true" opens POST /api/faults (tests and drills); off by default. */
    FAULT_INJECTION: z.enum(["true", "false", "1", "0"]).default("false"),
    /** `<tenant>=<requests per minute>/<concurrent requests>, ...` (shared/serving/tenant-limits.ts) */
    TENANT_LIMITS: z
      .string()
      .default(DEFAULT_TENANT_LIMITS)
      .superRefine((s, ctx) => {
        const r = parseTenantLimits(s);
        if (!r.ok) ctx.addIssue({ code: "custom", message: r.error });
      }),
  })
  .refine((c) => (c.KV_BLOCK_SIZE & (c.KV_BLOCK_SIZE - 1)) === 0, {
    message: "KV_BLOCK_SIZE must be a power of two",
  })
  .refine((c) => c.PREFIX_INDEX_TOKENS % c.KV_BLOCK_SIZE === 0, {
    message: "PREFIX_INDEX_TOKENS must be a multiple of KV_BLOCK_SIZE",
  })
  .refine((c) => c.MAX_NUM_BATCHED_TOKENS >= c.MAX_NUM_SEQS, {
    message: "MAX_NUM_BATCHED_TOKENS must be at least MAX_NUM_SEQS (one decode token each)",
  });

export interface ServingConfig {
  defaultModel: string;
  npuMemoryBudgetBytes: number;
  /** KV cache share of an instance's arena (weights + workspace + this, capped by the budget). */
  npuKvCacheBytes: number;
  /** Pre-warmed Npus kept bound to no model, ready to lease on scale-up. */
  poolSize: number;
  /** An autoscaled deployment idle this long scales to zero. */
  scaleToZeroAfterMs: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  blockSize: number;
  /** Prompt tokens per prefix-tree key (a multiple of `blockSize`). */
  prefixIndexTokens: number;
  jobExecutorShards: number;
  maxUploadBytes: number;
  logLevel: "debug" | "info" | "warn" | "error";
  tenantLimits: TenantLimits;
  faultInjection: boolean;
  npuSliceMs: number;
  /** The expert-rank failover watch (unreachable after half the hung threshold). */
  expertWatch: ExpertWatchOptions;
  moeMicroBatches: number;
}

/** @throws Error naming every bad variable. */
export function parseServingConfig(vars: Record<string, unknown>): ServingConfig {
  const picked = Object.fromEntries(
    Object.keys(ServingConfigSchema.shape).map((k) => [k, vars[k] === "" ? undefined : vars[k]]),
  );
  const r = ServingConfigSchema.safeParse(picked);
  if (!r.success) {
    const msg = r.error.issues
      .map((i) => `${i.path.join(".") || "config"}: ${i.message}`)
      .join("; ");
    throw new Error(`invalid configuration: ${msg}`);
  }
  const c = r.data;
  return Object.freeze({
    defaultModel: c.DEFAULT_MODEL,
    npuMemoryBudgetBytes: c.NPU_MEMORY_BUDGET_MB * 2 ** 20,
    npuKvCacheBytes: c.NPU_KV_CACHE_MB * 2 ** 20,
    poolSize: c.POOL_SIZE,
    scaleToZeroAfterMs: c.SCALE_TO_ZERO_AFTER_S * 1000,
    maxNumSeqs: c.MAX_NUM_SEQS,
    maxNumBatchedTokens: c.MAX_NUM_BATCHED_TOKENS,
    blockSize: c.KV_BLOCK_SIZE,
    prefixIndexTokens: c.PREFIX_INDEX_TOKENS,
    jobExecutorShards: c.JOB_EXECUTOR_SHARDS,
    maxUploadBytes: c.MAX_BODY_MB * 2 ** 20,
    logLevel: c.LOG_LEVEL,
    npuSliceMs: c.NPU_SLICE_MS,
    expertWatch: {
      probeMs: c.EXPERT_PROBE_MS,
      hungAfterMs: c.EXPERT_HUNG_AFTER_MS,
      lostAfterMs: Math.max(c.EXPERT_PROBE_MS, c.EXPERT_HUNG_AFTER_MS / 2),
    },
    moeMicroBatches: c.MOE_MICRO_BATCHES,
    faultInjection: c.FAULT_INJECTION === "true" || c.FAULT_INJECTION === "1",
    tenantLimits: (parseTenantLimits(c.TENANT_LIMITS) as { ok: true; value: TenantLimits }).value,
  });
}

const parsed = new WeakMap<object, ServingConfig>();

/** parseServingConfig memoised per bindings object (once per isolate). @throws Error on bad values. */
export function servingConfig(vars: object): ServingConfig {
  let c = parsed.get(vars);
  if (!c) {
    c = parseServingConfig(vars as Record<string, unknown>);
    parsed.set(vars, c);
  }
  return c;
}
