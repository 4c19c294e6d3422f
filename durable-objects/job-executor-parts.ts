/**
 * How a JobExecutor's parts are built and wired to each other: the records, the model directory,
 * placement, planning, submission, task reports, migrations, context caches, batches, the
 * watchdog, idempotency keys, tenant limits, fault switches and the one alarm's timers.
 */
import { Logger, parseLogLevel } from "../shared/log.ts";
import { prefixStrideBlocks } from "../shared/serving/prefix-tree.ts";
import { TenantLimiter } from "../shared/serving/tenant-limits.ts";
import type { DeploymentRecord } from "../shared/types/deployments.ts";
import { AlarmTimers } from "./alarm-timers.ts";
import { BatchRunner } from "./batch-runner.ts";
import { ContextCacheRoutes } from "./context-cache-routes.ts";
import { type Env, getConfig } from "./env.ts";
import { FaultSwitch } from "./faults.ts";
import { IdempotencyKeys } from "./idempotency-keys.ts";
import { JobMigrations } from "./job-migrations.ts";
import { JobPlanner } from "./job-planner.ts";
import { JobSubmission } from "./job-submission.ts";
import { ModelDirectory } from "./model-directory.ts";
import { PlacementState } from "./placement-state.ts";
import { RecordStore } from "./records.ts";
import { type TaskEvent, TaskReports } from "./task-reports.ts";
import { TaskWatchdog } from "./task-watchdog.ts";

/** Longest a request waits for its deployment to scale from zero (then 503, Retry-After). */
const SCALE_FROM_ZERO_TIMEOUT_MS = 30_000;

/**
 * The JobExecutor's parts, wired to each other (job-executor.ts is the RPC surface over them).
 * Callbacks reach parts built later in this function only when they run, never during wiring.
 * `taskEvent` is the JobExecutor's own entry point for a task's report.
 */
export function jobExecutorParts(
  ctx: DurableObjectState,
  env: Env,
  taskEvent: (e: TaskEvent) => Promise<void>,
) {
  const log = new Logger(
    { do: "JobExecutor", name: ctx.id.name ?? null },
    parseLogLevel(env.LOG_LEVEL),
  );
  const timers = new AlarmTimers({
    ctx,
    log,
    snapshot: () => placement.snapshot(),
    rounds: [
      () => {
        batches.alarm();
        return null;
      },
      async () => {
        await watchdog.check();
        return null;
      },
      () => migrations.releaseExpired(Date.now()),
      () => keys.expire(Date.now()),
    ],
  });
  const config = getConfig(env);
  const records = new RecordStore(ctx.storage, log);
  const models = new ModelDirectory(env);
  const scaleFromZero = (d: DeploymentRecord) =>
    models.scaleFromZero(d, SCALE_FROM_ZERO_TIMEOUT_MS);
  const keys = new IdempotencyKeys(ctx.storage.sql);
  const limiter = new TenantLimiter(config.tenantLimits);
  const faults = new FaultSwitch(ctx, env, log);
  const watchdog = new TaskWatchdog({
    env,
    log,
    records,
    arm: (at) => timers.arm(at),
    recovered: (npu) => placement.markHealthy(npu),
    fail: (task, reason) =>
      taskEvent({
        requestId: task.requestId,
        taskId: task.id,
        status: "failed",
        finishedAt: Date.now(),
        error: reason,
        instanceFailure: true,
      }),
  });
  // start-up reconciliation: tasks live in storage are checked within a watchdog interval
  if (records.read().watchedTasks().length > 0) watchdog.arm();
  const placement = new PlacementState(
    env,
    ctx.storage.kv,
    config.blockSize,
    prefixStrideBlocks(config.prefixIndexTokens, config.blockSize),
  );
  const reports = new TaskReports({
    log,
    records,
    placement,
    models,
    env,
    waitUntil: (p) => ctx.waitUntil(p),
    changed: () => timers.scheduleSnapshot(),
  });
  const planner = new JobPlanner({
    log,
    models,
    placement,
    contextCache: (id, tenant) => caches.lookup(id, tenant),
    changed: () => timers.scheduleSnapshot(),
  });
  const migrations = new JobMigrations({
    log,
    records,
    arm: (at) => timers.arm(at),
    apply: (requestId, taskId, p, mirror) => reports.apply({ requestId, taskId, ...p }, mirror),
    plan: (spec, deploymentId, attempt, exclude) =>
      planner.planAttempt(spec, deploymentId, attempt, exclude),
  });
  migrations.restoreHeld(Date.now());
  const caches = new ContextCacheRoutes({
    env,
    log,
    sql: ctx.storage.sql,
    shardName: ctx.id.name,
    models,
    placement,
    scaleFromZero,
  });
  const batches = new BatchRunner({
    ctx,
    env,
    log,
    records,
    plan: (s, attempt) => planner.plan(s, attempt),
    model: (name) => models.get(name),
    scaleFromZero,
    unplan: (taskId) => placement.forget(taskId),
    onTaskEvent: (e) => taskEvent(e),
  });
  const submission = new JobSubmission({
    planner,
    records,
    migrations,
    watchdog,
    scaleFromZero,
  });
  return {
    log,
    records,
    caches,
    batches,
    models,
    placement,
    planner,
    submission,
    reports,
    keys,
    limiter,
    watchdog,
    faults,
    migrations,
    timers,
  };
}

export type JobExecutorParts = ReturnType<typeof jobExecutorParts>;
