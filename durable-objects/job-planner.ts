/**
 * The JobExecutor's admission and planning of a job, shared by submit, a migration's next
 * attempt and the BatchRunner: the request's model and the deployments it may use (from the
 * model records the ClusterManager pushes, model-directory.ts), the input of a context cache it
 * continues, then one tokenisation, the context check and the placement of its tasks
 * (DeepFlow's Algorithm 1, model-scheduler.ts) over the load in placement-state.ts. Records
 * nothing; the JobExecutor records what it submits.
 */
import type { Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import type { JobSpec, SubmitJob, Submitted } from "../shared/protocol/messages.ts";
import {
  chooseDeployments,
  continueContextCache,
  modelOrNotFound,
  numSeqsOf,
} from "../shared/serving/admission.ts";
import type { ContextCacheRecord } from "../shared/types/records.ts";
import type { ModelDirectory } from "./model-directory.ts";
import type { PlanInput } from "./model-scheduler.ts";
import type { PlacementState } from "./placement-state.ts";

export interface PlannerHost {
  log: Logger;
  models: ModelDirectory;
  placement: PlacementState;
  /** A context cache from the shard that owns its id, or null. */
  contextCache(id: string, tenant: string): Promise<ContextCacheRecord | null>;
  /** A placement changed scheduling state (snapshot it soon). */
  changed(): void;
}

export class JobPlanner {
  constructor(private readonly host: PlannerHost) {}

  /** The request's model, deployments and (continuing a context cache) input and instance. */
  async admit(s: SubmitJob): Promise<Result<PlanInput>> {
    const models = this.host.models;
    const found = modelOrNotFound(s.spec.model, await models.get(s.spec.model));
    if (!found.ok) return found;
    const model = found.value;
    let spec = s.spec;
    let pinned: PlanInput["pinned"] = null;
    if (s.contextCache !== null) {
      const id = s.contextCache;
      const rec = await this.host.contextCache(id, spec.tenant);
      const input = continueContextCache(id, rec, model, s.deployment, spec.input);
      if (!input.ok) return input;
      spec = { ...spec, input: input.value };
      pinned = rec && { deploymentId: rec.deploymentId, instanceId: rec.instanceId };
    }
    const pin = s.deployment;
    const other =
      pin !== null && !model.deployments.some((d) => d.id === pin)
        ? await models.deployment(pin)
        : null;
    const deployments = chooseDeployments(model, pin, numSeqsOf(spec.input, spec.n), other);
    if (!deployments.ok) return deployments;
    return {
      ok: true,
      value: { spec, modelRecord: model, deployments: deployments.value, pinned },
    };
  }

  /**
   * Tokenises the job's prompts once, checks them against the context, and places its tasks
   * (DeepFlow's Algorithm 1, one `scheduler.decided` line with its scores). Records nothing; the
   * load table counts the placed work until the instances report it.
   */
  async plan(
    s: PlanInput,
    attempt: number,
    exclude: string | null = null,
  ): Promise<Result<Submitted>> {
    const placement = this.host.placement;
    const sched = await placement.scheduler(s.modelRecord);
    const states = (numSeqs: number) =>
      // a PD group serves one sequence
      s.deployments
        .filter((d) => d.mode !== "pd" || numSeqs === 1)
        .map((d) => placement.deploymentState(d, exclude));
    const planned = sched.plan(s, states, attempt);
    if (!planned.ok) return planned;
    const p = planned.value;
    this.host.log.info("scheduler.decided", {
      requestId: s.spec.requestId,
      ...(p.decision ?? { reason: "context-cache", ...s.pinned }),
    });
    if (p.decision) this.host.changed();
    placement.placed(s, p, p.numSeqs, p.outstanding, Date.now());
    return { ok: true, value: p.submitted };
  }

  /** Admits and plans attempt `attempt` of a migrating job on its deployment, not on `exclude`. */
  async planAttempt(
    spec: JobSpec,
    deploymentId: string,
    attempt: number,
    exclude: string,
  ): Promise<Result<Submitted>> {
    const admitted = await this.admit({
      spec,
      kind: "text_completion",
      clientRequestId: null,
      receivedAt: Date.now(),
      deployment: deploymentId,
      contextCache: null,
    });
    if (!admitted.ok) return admitted;
    return this.plan(admitted.value, attempt, exclude);
  }
}
