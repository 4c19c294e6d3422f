/**
 * GET /metrics in Prometheus' text format: every JobExecutor shard's metrics (updated as task
 * reports arrive, so one RPC per shard whatever the traffic), merged, with the instance states
 * of the active deployments (one ClusterManager call), and rendered.
 */
import { Hono } from "hono";
import { jobExecutorName } from "../shared/protocol/names.ts";
import { PROMETHEUS_CONTENT_TYPE } from "../shared/serving/metrics.ts";
import { renderServingMetrics } from "../shared/serving/serving-metrics.ts";
import type { AppEnv } from "./app-env.ts";
import { clusterManager, getConfig } from "./env.ts";
import { authenticateMetrics } from "./middleware/auth.ts";

export const metrics = new Hono<AppEnv>();

metrics.get("/", async (c) => {
  await authenticateMetrics(c.env, c.req.header("authorization"));
  const shards = getConfig(c.env).jobExecutorShards;
  const [deployments, ...snaps] = await Promise.all([
    clusterManager(c.env).listDeployments(),
    ...Array.from({ length: shards }, (_, i) =>
      c.env.JOB_EXECUTOR.getByName(jobExecutorName(i)).metrics(),
    ),
  ]);
  const body = renderServingMetrics(snaps, deployments);
  return c.body(body, 200, { "content-type": PROMETHEUS_CONTENT_TYPE });
});
