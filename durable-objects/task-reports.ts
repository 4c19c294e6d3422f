/**
 * The JobExecutor's application of an instance's report on a task: onto the records (with the
 * mirroring job-migrations.ts chooses), the failed instance marked unhealthy and replaced, its
 * load and the prefix tree and predictor updated (placement-state.ts), one Analytics Engine
 * point, and a `task.completed` line once the task ends.
 */
import type { EngineStats } from "../shared/engine/engine.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { npuName } from "../shared/protocol/names.ts";
import { UNHEALTHY_FOR_MS } from "../shared/serving/migration.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import type { NpuCounters } from "../shared/serving/serving-metrics.ts";
import type { Env } from "./env.ts";
import type { ModelDirectory } from "./model-directory.ts";
import type { PlacementState } from "./placement-state.ts";
import type { RecordStore } from "./records.ts";

/** An instance's report on one of its tasks, with its load at that moment. */
export interface TaskEvent extends TaskProgress {
  requestId: string;
  taskId: string;
  load?: EngineStats;
  /** The instance's running totals (preemptions, fabric), for /metrics. */
  counters?: NpuCounters;
}

export interface TaskReportHost {
  log: Logger;
  records: RecordStore;
  placement: PlacementState;
  models: ModelDirectory;
  env: Env;
  /** Keeps the object alive for a background promise (the instance's replacement). */
  waitUntil(p: Promise<unknown>): void;
  /** A report changed scheduling state (snapshot it soon). */
  changed(): void;
}

export class TaskReports {
  constructor(private readonly host: TaskReportHost) {}

  /** A task report applied with `mirror` (job-migrations.ts holds and releases failures). */
  apply(e: TaskEvent, mirror: "auto" | "none" | "force"): void {
    const { log, records, placement } = this.host;
    const { requestId, taskId, load, counters, ...progress } = e;
    const applied = records.applyProgress(taskId, progress, mirror);
    if (!applied) {
      placement.forget(taskId);
      return;
    }
    if (mirror === "none" && applied.ended) {
      // its instance failed: no new work for it meanwhile (the watchdog recovers a hung one)
      const { instanceId, model } = applied;
      if (placement.markUnhealthy(npuName(instanceId), Date.now() + UNHEALTHY_FOR_MS)) {
        log.warn("instance.unhealthy", { instanceId, taskId });
        // and replaced: a new instance of its role starts, it leaves the deployment
        this.host.waitUntil(
          this.host.models
            .replace(model, instanceId)
            .catch((e: unknown) => log.warn("instance.replace_failed", errorFields(e))),
        );
      }
    }
    const { changed, point } = placement.reported(
      taskId,
      applied,
      progress,
      load,
      counters,
      Date.now(),
    );
    if (changed) this.host.changed();
    if (point) this.host.env.ANALYTICS?.writeDataPoint(point);
    if (applied.ended) {
      placement.saveMetricsSoon();
      const { role, status } = applied;
      log.debug("task.completed", { requestId, taskId, role, status });
    }
  }
}
