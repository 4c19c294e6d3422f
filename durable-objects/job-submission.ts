/**
 * JobSubmission: how the JobExecutor starts an interactive job. The job is admitted
 * (job-planner.ts); an idle deployment is scaled from zero first (then the job is admitted again
 * on the records the ClusterManager pushed); the job is planned, tracked for migration
 * (job-migrations.ts) and recorded once the answer has gone out (records.ts), and the watchdog
 * armed. Unknown models, bad input and capacity failures come back as values, and then nothing
 * is recorded.
 */
import type { Result } from "../shared/errors.ts";
import type { SubmitJob, Submitted } from "../shared/protocol/messages.ts";
import type { DeploymentRecord } from "../shared/types/deployments.ts";
import type { JobMigrations } from "./job-migrations.ts";
import type { JobPlanner } from "./job-planner.ts";
import { idleDeployment } from "./model-directory.ts";
import { placedNewTasks, type RecordStore } from "./records.ts";
import type { TaskWatchdog } from "./task-watchdog.ts";

export interface SubmissionHost {
  planner: JobPlanner;
  records: RecordStore;
  migrations: JobMigrations;
  watchdog: TaskWatchdog;
  /** Waits for an instance of an idle deployment: how long it took, or an error value. */
  scaleFromZero(d: DeploymentRecord): Promise<Result<{ coldStartMs: number }>>;
}

export class JobSubmission {
  constructor(private readonly host: SubmissionHost) {}

  async submit(s: SubmitJob): Promise<Result<Submitted>> {
    const { planner } = this.host;
    let admitted = await planner.admit(s);
    if (!admitted.ok) return admitted;
    let coldStartMs: number | null = null;
    const idle = idleDeployment(admitted.value.deployments);
    if (idle) {
      // scale from zero: wait for an instance (the ClusterManager pushes the record first)
      const cold = await this.host.scaleFromZero(idle);
      if (!cold.ok) return cold;
      coldStartMs = cold.value.coldStartMs;
      admitted = await planner.admit(s);
      if (!admitted.ok) return admitted;
    }
    const planned = await planner.plan(admitted.value, 0);
    if (!planned.ok) return planned;
    const { jobId, requestId } = s.spec;
    this.host.migrations.track(jobId, requestId, planned.value);
    this.host.records.createSoon(
      {
        id: requestId,
        tenant: s.spec.tenant,
        model: s.spec.model,
        kind: s.kind,
        clientRequestId: s.clientRequestId,
        receivedAt: s.receivedAt,
      },
      [{ id: jobId, kind: s.kind }],
      placedNewTasks(planned.value.placement, jobId, requestId, coldStartMs),
    );
    this.host.watchdog.arm();
    return planned;
  }
}
