/**
 * How an Npu's parts are built and wired to each other: the model slot, context pins, task
 * streams, the fabric host, the KV handoff, the engine loop, lifecycle, residency, admission, the
 * moe-attention rank and recovery; and where a step's outputs go.
 */
import type { StepReport } from "../shared/engine/engine.ts";
import { Logger, parseLogLevel } from "../shared/log.ts";
import { estimatedStepMs } from "../shared/serving/step-cost.ts";
import { ContextPins } from "./context-pins.ts";
import { EngineLoop } from "./engine-loop.ts";
import { type Env, getConfig } from "./env.ts";
import { FabricHost } from "./fabric-host.ts";
import { KvHandoff } from "./kv-handoff.ts";
import { NpuAttention } from "./npu-attention.ts";
import { NpuLifecycle } from "./npu-lifecycle.ts";
import { ModelSlot } from "./npu-loader.ts";
import { NpuRecovery } from "./npu-recovery.ts";
import { NpuResidency } from "./npu-residency.ts";
import { TaskAdmission } from "./task-admission.ts";
import { TaskStreams } from "./task-streams.ts";

/** The reason a failed step gives its tasks (the error's message). */
function stepFailure(e: unknown): string {
  return `engine failure: ${e instanceof Error ? e.message : String(e)}`;
}

/**
 * The Npu's parts, wired to each other (npu.ts is the RPC surface over them). Callbacks reach
 * parts built later in this function only when they run, never during wiring.
 */
export function npuParts(ctx: DurableObjectState, env: Env) {
  const pins = new ContextPins();
  const lifecycle = new NpuLifecycle();
  const name = ctx.id.name ?? "";
  const log = new Logger({ do: "Npu", name }, parseLogLevel(env.LOG_LEVEL));
  const slot = new ModelSlot(env, log);
  const fabric = new FabricHost(ctx.storage);
  const streams: TaskStreams = new TaskStreams(
    env,
    ctx,
    log,
    () => slot.current?.instance.engine,
    () => ({ numPreemptions: loop.numPreemptions, fabric: fabric.counters() }),
  );
  const handoff: KvHandoff = new KvHandoff({
    name,
    env,
    ctx,
    log,
    fabric,
    reports: streams,
    kick: () => kick(),
  });
  const loop: EngineLoop = new EngineLoop({
    ctx,
    log,
    engine: () => attention.leader ?? slot.current?.instance.engine,
    onStep: (report, startedAt, endedAt) => onStep(report, startedAt, endedAt),
    onFailure: (e) => {
      lifecycle.failAll();
      streams.failAll(stepFailure(e));
      handoff.failAll();
    },
    sliceMs: getConfig(env).npuSliceMs,
    stepCostMs: (r) => {
      const config = slot.current?.instance.config;
      return config ? estimatedStepMs(config, r) : 0;
    },
    continueLater: () => ctx.waitUntil(ctx.storage.setAlarm(Date.now())),
  });
  const residency: NpuResidency = new NpuResidency({
    storage: ctx.storage,
    slot,
    lifecycle,
    pins,
    handoff,
    loop,
    busy: () => streams.size > 0 || admission.starting.size > 0,
  });
  const admission: TaskAdmission = new TaskAdmission({
    slot,
    streams,
    handoff,
    pins,
    lifecycle,
    log,
    kick: () => kick(),
    scheduleAlarm: () => residency.scheduleAlarm(),
  });
  streams.onEnded = () => lifecycle.changed();
  const attention: NpuAttention = new NpuAttention({
    env,
    slot,
    log,
    kickLoop: () => loop.kick(),
    waitUntil: (p) => ctx.waitUntil(p),
    onStep: (report, t0, t1) => onStep(report, t0, t1),
    // the leader drives this rank's steps: each is progress for the JobExecutor's watchdog
    onProgress: () => loop.numSteps++,
    onStepError: (e) => streams.failAll(stepFailure(e)),
  });
  const recovery: NpuRecovery = new NpuRecovery({
    env,
    log,
    slot,
    loop,
    streams,
    handoff,
    pins,
    admission,
    attention,
    abort: (reason) => ctx.abort(reason),
  });
  /** A step's outputs to their owners: a warm-up, a PD handoff, or a task's stream. */
  const onStep = (report: StepReport, startedAt: number, endedAt: number): void => {
    streams.markStarted(report.scheduledSeqIds, startedAt);
    for (const o of report.outputs) {
      if (lifecycle.onOutput(o)) continue;
      if (handoff.onOutput(o)) continue;
      streams.onOutput(o, endedAt);
    }
  };
  /** New work: the engine loop runs (an attention rank of moe-attention asks its leader). */
  const kick = (): void => {
    if (attention.role) attention.role.kick();
    else loop.kick();
  };
  return {
    log,
    slot,
    pins,
    streams,
    fabric,
    handoff,
    loop,
    lifecycle,
    attention,
    admission,
    residency,
    recovery,
    kick,
  };
}

export type NpuParts = ReturnType<typeof npuParts>;
