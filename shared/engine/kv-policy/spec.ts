/**
 * KV-cache policies (RaaS and its baselines): the one literal union of policy names, the
 * per-request / per-deployment spec with its documented defaults, and its validation. Pure.
 *
 * A page is `pageSize` tokens = a whole number of KV blocks (`pageSize % blockSize == 0`). The
 * budget is in tokens and covers every resident page, pinned prefill and the current page
 * included (`budgetPages = floor(budget / pageSize)`).
 */
import { type ErrorInfo, errorInfo } from "../../errors.ts";
import { KV_SCORE_AGGREGATES, type KvScoreAggregate } from "../../model/page-scorer.ts";

export const KV_POLICIES = ["dense", "streamingllm", "h2o", "quest", "raas", "raas-nopin"] as const;
export type KvPolicyName = (typeof KV_POLICIES)[number];

export interface KvCacheSpec {
  policy: KvPolicyName;
  /** Tokens of KV a sequence may hold (quest: may attend to). Ignored by dense. */
  budget: number;
  /** Tokens per page; a multiple of the instance's KV block size. */
  pageSize: number;
  /** streamingllm: leading tokens always kept (rounded up to whole pages). */
  sinks: number;
  /** h2o: share of the page budget kept for the most recent pages. */
  recentShare: number;
  /** raas: share of the page budget whose timestamps each step refreshes (top pages by bound). */
  refreshShare: number;
  /** h2o, quest, raas: how per-(layer, head) page scores combine. */
  aggregate: KvScoreAggregate;
}

/** What a request or deployment names (the rest comes from the defaults). */
export type KvCacheRequest = Partial<KvCacheSpec>;

/** The defaults a request or deployment gets for each field it leaves out. */
export const KV_CACHE_DEFAULTS = {
  policy: "dense",
  budget: 256,
  sinks: 4,
  recentShare: 0.5,
  refreshShare: 0.5,
  aggregate: "sum",
} as const;

/** The defaults, with the page size of one KV block. */
export function defaultKvCache(blockSize: number): KvCacheSpec {
  return { ...KV_CACHE_DEFAULTS, pageSize: blockSize };
}

/**
 * A request's policy: its own fields over the deployment's default over `KV_CACHE_DEFAULTS`
 * (page size: one KV block).
 */
export function resolveKvCache(
  request: KvCacheRequest | null,
  deploymentDefault: KvCacheRequest | null,
  blockSize: number,
): KvCacheSpec {
  return { ...defaultKvCache(blockSize), ...(deploymentDefault ?? {}), ...(request ?? {}) };
}

/** True for policies that free evicted blocks (their KV memory stays within the budget). */
export function evicts(policy: KvPolicyName): boolean {
  return (
    policy === "streamingllm" || policy === "h2o" || policy === "raas" || policy === "raas-nopin"
  );
}

/** Pages of the budget. */
export function budgetPages(spec: KvCacheSpec): number {
  return Math.floor(spec.budget / spec.pageSize);
}

/** Pages that hold prompt tokens (raas pins them). */
export function promptPages(spec: KvCacheSpec, numPromptTokens: number): number {
  return Math.ceil(numPromptTokens / spec.pageSize);
}

/**
 * Checks a spec against the instance's block size and (when known) the prompt length. Returns
 * a 400 naming the offending field (`kv_cache.<field>`), or null.
 */
export function checkKvCache(
  spec: KvCacheSpec,
  blockSize: number,
  numPromptTokens: number | null = null,
): ErrorInfo | null {
  const bad = (field: string, msg: string) =>
    errorInfo("invalid_request", msg, `kv_cache.${field}`, "invalid_kv_cache");
  if (!(KV_POLICIES as readonly string[]).includes(spec.policy)) {
    return bad("policy", `kv_cache.policy must be one of ${KV_POLICIES.join(", ")}`);
  }
  if (!(Number.isInteger(spec.pageSize) && spec.pageSize > 0 && spec.pageSize % blockSize === 0)) {
    return bad(
      "page_size",
      `kv_cache.page_size must be a multiple of the KV block size (${blockSize})`,
    );
  }
  if (spec.policy === "dense") return null;
  if (!(KV_SCORE_AGGREGATES as readonly string[]).includes(spec.aggregate)) {
    return bad("aggregate", `kv_cache.aggregate must be one of ${KV_SCORE_AGGREGATES.join(", ")}`);
  }
  if (!(Number.isInteger(spec.budget) && budgetPages(spec) >= 2)) {
    return bad(
      "budget",
      `kv_cache.budget must be an integer of at least two pages (${2 * spec.pageSize} tokens)`,
    );
  }
  const sinksOk = Number.isInteger(spec.sinks) && spec.sinks >= 0;
  if (!sinksOk || (spec.policy === "streamingllm" && spec.sinks >= spec.budget - spec.pageSize)) {
    return bad("sinks", "kv_cache.sinks must be an integer in [0, budget - page_size)");
  }
  for (const [field, v] of [
    ["recent_share", spec.recentShare],
    ["refresh_share", spec.refreshShare],
  ] as const) {
    if (!(v > 0 && v <= 1)) return bad(field, `kv_cache.${field} must be in (0, 1]`);
  }
  if (spec.policy === "raas" && numPromptTokens !== null) {
    const need = (promptPages(spec, numPromptTokens) + 1) * spec.pageSize;
    if (budgetPages(spec) < promptPages(spec, numPromptTokens) + 1) {
      return bad(
        "budget",
        `kv_cache.budget ${spec.budget} is smaller than the pinned prompt: raas keeps the ` +
          `prompt's ${promptPages(spec, numPromptTokens)} pages plus the current page (${need} tokens)`,
      );
    }
  }
  return null;
}
