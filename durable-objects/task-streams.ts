/**
 * The Npu's tasks in flight: each task's NDJSON GenerateEvent stream, the map from engine
 * sequences back to (task, choice index), and the task's progress reports to the JobExecutor
 * that owns its request (running, first token, finished with usage). Reports made while one step
 * is processed go out together, one RPC per task, and carry the instance's load (the JobExecutor
 * places requests with it). Turns engine outputs into events, and finishes, aborts or cancels
 * tasks (a cancelled stream cancels its task).
 */
import type { Engine, SeqOutput } from "../shared/engine/engine.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { encodeEvent } from "../shared/protocol/codec.ts";
import type { GenerateEvent, GenerateTask } from "../shared/protocol/messages.ts";
import { jobExecutorName, requestShard } from "../shared/protocol/names.ts";
import type { TaskLatency } from "../shared/serving/autoscaler.ts";
import { instanceFailed } from "../shared/serving/migration.ts";
import type { TaskProgress } from "../shared/serving/records.ts";
import type { NpuCounters } from "../shared/serving/serving-metrics.ts";
import type { TaskTracker } from "../shared/serving/task.ts";
import { type Env, getConfig } from "./env.ts";
import { Outbox } from "./outbox.ts";

/** Latencies of this many recent tasks are kept. */
const MAX_LATENCIES = 64;

export interface ActiveTask {
  task: GenerateTask;
  tracker: TaskTracker;
  outbox: Outbox;
  seqIds: string[];
  acceptedAt: number;
  startedAt: number | null;
}

export class TaskStreams {
  private readonly tasks = new Map<string, ActiveTask>();
  /** seqId -> (taskId, choice index) */
  private readonly seqs = new Map<string, { taskId: string; index: number }>();
  /** Progress not yet sent, per task (flushed once the current step's outputs are processed). */
  private readonly unsent = new Map<string, { task: GenerateTask; progress: TaskProgress }>();
  /** Called after a task ends (the Npu's drain waits on it). */
  onEnded: () => void = () => {};
  /** The latest succeeded tasks' latencies, oldest first (the autoscaler's SLO input). */
  readonly latencies: TaskLatency[] = [];

  constructor(
    private readonly env: Env,
    private readonly ctx: DurableObjectState,
    private readonly log: Logger,
    /** The loaded model's engine (sequences are aborted there), if any. */
    private readonly engine: () => Engine | undefined,
    /** The Npu's running totals, pushed with every report for /metrics. */
    private readonly counters: () => NpuCounters,
  ) {}

  get size(): number {
    return this.tasks.size;
  }

  has(taskId: string): boolean {
    return this.tasks.has(taskId);
  }

  /** A task and its event stream, not yet running: add its sequences, then `start` it. */
  open(
    task: GenerateTask,
    tracker: TaskTracker,
  ): { active: ActiveTask; stream: ReadableStream<Uint8Array> } {
    const outbox = new Outbox(() => this.cancel(task.taskId, "client disconnected"));
    const active: ActiveTask = {
      task,
      tracker,
      outbox,
      seqIds: [],
      acceptedAt: Date.now(),
      startedAt: null,
    };
    return { active, stream: outbox.stream };
  }

  /** Routes the engine outputs of `seqId` to choice `index` of the task. */
  addSeq(active: ActiveTask, seqId: string, index: number): void {
    active.seqIds.push(seqId);
    this.seqs.set(seqId, { taskId: active.task.taskId, index });
  }

  /** Drops a task that never started: aborts the sequences added so far and forgets them. */
  discard(active: ActiveTask): void {
    this.abort(active);
    for (const id of active.seqIds) this.seqs.delete(id);
  }

  start(active: ActiveTask): void {
    this.tasks.set(active.task.taskId, active);
  }

  /** One engine output of a task's sequence: its events, first-token report, and finishing. */
  onOutput(o: SeqOutput, now: number): void {
    const ref = this.seqs.get(o.seqId);
    const active = ref && this.tasks.get(ref.taskId);
    if (!ref || !active) return;
    const first = active.tracker.firstTokenAt === null;
    for (const ev of active.tracker.onOutput(ref.index, o, now)) this.emit(active, ev);
    if (first) {
      this.report(active.task, { firstTokenAt: now });
      this.log.info("task.first_token", {
        requestId: active.task.requestId,
        taskId: active.task.taskId,
        ttftMs: now - active.acceptedAt,
      });
    }
    if (o.finished) this.seqs.delete(o.seqId);
    if (active.tracker.done) this.finish(active, "succeeded");
  }

  /** Marks the tasks whose sequences computed their first tokens in this step as started. */
  markStarted(scheduledSeqIds: readonly string[], now: number): void {
    for (const seqId of scheduledSeqIds) {
      const ref = this.seqs.get(seqId);
      const active = ref && this.tasks.get(ref.taskId);
      if (!active || active.startedAt !== null) continue;
      active.startedAt = now;
      this.report(active.task, { status: "running", startedAt: now });
    }
  }

  /** Keeps a succeeded task's latencies (the last MAX_LATENCIES of them). */
  observe(t: TaskLatency): void {
    this.latencies.push(t);
    if (this.latencies.length > MAX_LATENCIES) this.latencies.shift();
  }

  emit(active: ActiveTask, ev: GenerateEvent): void {
    active.outbox.push(encodeEvent(ev));
  }

  finish(
    active: ActiveTask,
    status: "succeeded" | "failed" | "cancelled",
    error?: string,
    instanceFailure = false,
  ): void {
    if (!this.tasks.delete(active.task.taskId)) return;
    for (const id of active.seqIds) this.seqs.delete(id);
    active.outbox.close();
    this.onEnded();
    const now = Date.now();
    const t = active.tracker;
    if (status === "succeeded" && t.firstTokenAt !== null) {
      const perSeq = t.completionTokens / Math.max(1, active.seqIds.length);
      this.observe({
        endedAt: now,
        ttftMs: t.firstTokenAt - active.acceptedAt,
        tpotMs: perSeq >= 2 ? (now - t.firstTokenAt) / (perSeq - 1) : null,
      });
    }
    this.report(active.task, {
      status,
      finishedAt: now,
      numPromptTokens: t.numPromptTokens,
      numCompletionTokens: t.completionTokens,
      numCachedTokens: t.cachedTokens,
      ...(error ? { error } : {}),
      ...(instanceFailure ? { instanceFailure } : {}),
    });
    this.log.info("task.finished", {
      requestId: active.task.requestId,
      taskId: active.task.taskId,
      status,
      numPromptTokens: t.numPromptTokens,
      numCachedTokens: t.cachedTokens,
      numCompletionTokens: t.completionTokens,
      ttftMs: t.firstTokenAt === null ? null : t.firstTokenAt - active.acceptedAt,
      durationMs: now - active.acceptedAt,
    });
  }

  /** Aborts the task's sequences in the engine (frees their KV blocks). */
  abort(active: ActiveTask): void {
    const engine = this.engine();
    for (const id of active.seqIds) engine?.abort(id);
  }

  cancel(taskId: string, reason: string): void {
    const active = this.tasks.get(taskId);
    if (!active) return;
    this.abort(active);
    this.log.info("task.cancelled", { requestId: active.task.requestId, taskId, reason });
    this.finish(active, "cancelled", reason);
  }

  /** The engine failed: every task gets an error event and is aborted and failed. */
  failAll(reason = "engine failure"): void {
    for (const active of [...this.tasks.values()]) {
      // a migratable job continues on another instance (shared/serving/migration.ts)
      this.emit(active, { type: "error", error: instanceFailed(reason) });
      this.abort(active);
      this.finish(active, "failed", reason, true);
    }
  }

  /** The ids of the tasks in flight. */
  ids(): string[] {
    return [...this.tasks.keys()];
  }

  /**
   * Reports task progress to the JobExecutor that owns the request (best effort, off the hot
   * path). Reports made before the next microtask are merged: one RPC per task per step.
   */
  report(task: GenerateTask, fields: TaskProgress): void {
    const u = this.unsent.get(task.taskId);
    if (u) {
      Object.assign(u.progress, fields);
      return;
    }
    if (this.unsent.size === 0) queueMicrotask(() => this.flush());
    this.unsent.set(task.taskId, { task, progress: { ...fields } });
  }

  private flush(): void {
    const load = this.engine()?.stats();
    const counters = this.counters();
    const shards = getConfig(this.env).jobExecutorShards;
    for (const { task, progress } of this.unsent.values()) {
      const je = this.env.JOB_EXECUTOR.getByName(
        jobExecutorName(requestShard(task.requestId, shards)),
      );
      const { requestId, taskId } = task;
      this.ctx.waitUntil(
        je.taskEvent({ requestId, taskId, ...progress, load, counters }).catch((e: unknown) => {
          this.log.warn("task.report_failed", { requestId, taskId, ...errorFields(e) });
        }),
      );
    }
    this.unsent.clear();
  }
}
