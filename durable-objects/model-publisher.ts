/**
 * The ClusterManager's push of a model's record to every JobExecutor shard (they admit requests
 * with it): after a model is registered or profiled, and whenever its deployments or their
 * serving instances change. A shard that cannot be reached refreshes on its own within a minute.
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { jobExecutorName } from "../shared/protocol/names.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import type { ClusterRegistry } from "./cluster-registry.ts";
import { type Env, getConfig } from "./env.ts";

export class ModelPublisher {
  constructor(
    private readonly env: Env,
    private readonly log: Logger,
    private readonly registry: ClusterRegistry,
  ) {}

  /** Pushes a model's current record (null once it is unknown) to every shard; returns it. */
  async publish(name: string): Promise<ModelRecord | null> {
    const s = this.registry.model(name);
    const record = s ? this.registry.withDeployments(s) : null;
    const shards = getConfig(this.env).jobExecutorShards;
    const pushes = Array.from({ length: shards }, (_, i) =>
      this.env.JOB_EXECUTOR.getByName(jobExecutorName(i)).modelChanged({ name, record }),
    );
    for (const r of await Promise.allSettled(pushes)) {
      if (r.status === "rejected") {
        this.log.warn("model.push_failed", { model: name, ...errorFields(r.reason) });
      }
    }
    return record;
  }
}
