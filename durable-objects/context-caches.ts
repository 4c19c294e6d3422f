/**
 * The JobExecutor's explicit context caches (DeepFlow's RTC by id), tenant-scoped, in its SQLite
 * storage: the table and every statement on it, and their creation. A record names the instance
 * whose Npu pins the prefix's KV blocks, and the weights generation it was computed with.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import type { JobSpec } from "../shared/protocol/messages.ts";
import { npuName } from "../shared/protocol/names.ts";
import { noDeployment } from "../shared/serving/admission.ts";
import { callInstance } from "../shared/serving/dispatch.ts";
import { cacheSaltFor } from "../shared/serving/prefix-tree.ts";
import { chooseLeastLoaded, type DeploymentState } from "../shared/serving/scheduling.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import type { ContextCacheRecord } from "../shared/types/records.ts";
import type { Env } from "./env.ts";
import type { ModelScheduler } from "./model-scheduler.ts";

const SCHEMA = `CREATE TABLE IF NOT EXISTS context_caches (id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL, record TEXT NOT NULL, expires_at INTEGER NOT NULL);`;

export class ContextCacheStore {
  constructor(private readonly sql: SqlStorage) {
    sql.exec(SCHEMA);
  }

  put(tenant: string, r: ContextCacheRecord): void {
    this.sql.exec(
      "INSERT INTO context_caches (id, tenant, record, expires_at) VALUES (?, ?, ?, ?)",
      r.id,
      tenant,
      JSON.stringify(r),
      r.expiresAt,
    );
  }

  /** The tenant's context cache, or null when unknown, expired (then deleted) or another's. */
  get(id: string, tenant: string, now: number): ContextCacheRecord | null {
    const row = this.sql
      .exec("SELECT record, expires_at FROM context_caches WHERE id = ? AND tenant = ?", id, tenant)
      .toArray()[0];
    if (!row) return null;
    if (Number(row.expires_at) <= now) {
      this.delete(id);
      return null;
    }
    const r = JSON.parse(row.record as string) as ContextCacheRecord;
    return { ...r, generation: r.generation ?? 0 };
  }

  delete(id: string): void {
    this.sql.exec("DELETE FROM context_caches WHERE id = ?", id);
  }
}

export interface NewContextCache {
  id: string;
  spec: JobSpec;
  modelRecord: ModelRecord;
  ttlMs: number;
}

/**
 * Tokenises the prefix (as a request's prompt would be), pins its KV on the least loaded instance
 * of `pool` (the model's colocated deployments) and records the cache. Errors are values.
 */
export async function createContextCache(
  host: {
    env: Env;
    log: Logger;
    store: ContextCacheStore;
    pool: DeploymentState[];
    scheduler: ModelScheduler;
  },
  c: NewContextCache,
): Promise<Result<ContextCacheRecord>> {
  const m = c.modelRecord;
  const instances = host.pool.flatMap((d) => d.instances.map((i) => ({ d, i })));
  if (instances.length === 0) {
    return failure(noDeployment(m, m.deployments.length > 0, "a context cache"));
  }
  const prepared = host.scheduler.prepare(c.spec.input, 1, m.summary.contextLength);
  if (!prepared.ok) return prepared;
  const p = prepared.value;
  if (p.prompts.length !== 1) {
    return failure(errorInfo("invalid_request", "a context cache holds one prompt", "prompt"));
  }
  const chosen = chooseLeastLoaded(instances.map((x) => x.i)).instanceId;
  const best = instances.find((x) => x.i.instanceId === chosen) as (typeof instances)[number];
  const now = Date.now();
  const expiresAt = now + c.ttlMs;
  const pinned = await callInstance(chosen, () =>
    host.env.NPU.getByName(npuName(chosen)).pinPrefix({
      cacheId: c.id,
      promptIds: p.prompts[0] as number[],
      cacheSalt: cacheSaltFor(c.spec.tenant, c.spec.cacheSalt),
      model: m.name,
      r2Key: m.r2Key,
      expiresAt,
    }),
  );
  if (!pinned.ok) return pinned;
  const record: ContextCacheRecord = {
    id: c.id,
    object: "context_cache",
    model: m.name,
    generation: m.generation,
    deploymentId: best.d.deploymentId,
    instanceId: chosen,
    input: c.spec.input,
    numTokens: p.numPromptTokens,
    numCachedTokens: pinned.value.numPinnedTokens,
    createdAt: now,
    expiresAt,
  };
  host.store.put(c.spec.tenant, record);
  host.log.info("context_cache.created", {
    cacheId: c.id,
    instanceId: chosen,
    numTokens: record.numTokens,
  });
  return { ok: true, value: record };
}
