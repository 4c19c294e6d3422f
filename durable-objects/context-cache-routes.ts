/**
 * The JobExecutor's context-cache routes (DeepFlow's RTC by id), tenant-scoped: creating a cache
 * (scaling an idle colocated deployment from zero first), reading one, deleting one (and
 * unpinning its KV on its instance), and finding one by id on the shard that owns it (this one,
 * or another JobExecutor by RPC) for the planner. Storage and creation live in context-caches.ts.
 */
import type { Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { jobExecutorName, npuName, requestShard } from "../shared/protocol/names.ts";
import type { DeploymentRecord } from "../shared/types/deployments.ts";
import type { ContextCacheRecord } from "../shared/types/records.ts";
import { ContextCacheStore, createContextCache, type NewContextCache } from "./context-caches.ts";
import { type Env, getConfig } from "./env.ts";
import { idleDeployment, type ModelDirectory } from "./model-directory.ts";
import type { PlacementState } from "./placement-state.ts";

export interface ContextCacheHost {
  env: Env;
  log: Logger;
  sql: SqlStorage;
  /** This JobExecutor's name (its shard), to tell a local cache id from another shard's. */
  shardName: string | undefined;
  models: ModelDirectory;
  placement: PlacementState;
  scaleFromZero: (d: DeploymentRecord) => Promise<Result<{ coldStartMs: number }>>;
}

export class ContextCacheRoutes {
  readonly #host: ContextCacheHost;
  readonly #store: ContextCacheStore;

  constructor(host: ContextCacheHost) {
    this.#host = host;
    this.#store = new ContextCacheStore(host.sql);
  }

  /** A context cache from the shard that owns its id (this one, or another by RPC). */
  lookup(id: string, tenant: string): Promise<ContextCacheRecord | null> {
    const env = this.#host.env;
    const name = jobExecutorName(requestShard(id, getConfig(env).jobExecutorShards));
    if (name === this.#host.shardName) return Promise.resolve(this.get(id, tenant));
    return env.JOB_EXECUTOR.getByName(name).getContextCache({ id, tenant });
  }

  /**
   * Creates a context cache: tokenises the prefix, pins its KV on the least loaded instance of a
   * colocated deployment of the model, and records it. Errors come back as values.
   */
  async create(c: NewContextCache): Promise<Result<ContextCacheRecord>> {
    const { models, placement } = this.#host;
    let m = c.modelRecord;
    const idle = idleDeployment(m.deployments.filter((d) => d.mode === "colocated"));
    if (idle) {
      const cold = await this.#host.scaleFromZero(idle);
      if (!cold.ok) return cold;
      m = (await models.get(m.name)) ?? m;
      c = { ...c, modelRecord: m };
    }
    return createContextCache(
      {
        env: this.#host.env,
        log: this.#host.log,
        store: this.#store,
        pool: m.deployments
          .filter((d) => d.mode === "colocated")
          .map((d) => placement.deploymentState(d)),
        scheduler: await placement.scheduler(m),
      },
      c,
    );
  }

  /** The tenant's context cache, or null when unknown, expired or another tenant's. */
  get(id: string, tenant: string): ContextCacheRecord | null {
    return this.#store.get(id, tenant, Date.now());
  }

  /** Deletes the tenant's cache and unpins its KV; false when there was none. */
  async delete(id: string, tenant: string): Promise<boolean> {
    const rec = this.#store.get(id, tenant, Date.now());
    if (!rec) return false;
    this.#store.delete(id);
    // an unreachable instance has lost its pins already (they live in its memory)
    await this.#host.env.NPU.getByName(npuName(rec.instanceId))
      .unpinPrefix({ cacheId: id })
      .catch((e: unknown) => this.#host.log.warn("context_cache.unpin_failed", errorFields(e)));
    return true;
  }
}
