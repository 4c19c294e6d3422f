/**
 * The Npu's tasks in flight: each task's NDJSON GenerateEvent stream, the map from engine
 * sequences back to (task, choice index), and the task's progress reports to the JobExecutor
 * that owns its request (running, first token, finished with usage). Turns engine outputs into
 * events, and finishes, aborts or cancels tasks (a cancelled stream cancels its task).
 */
import type { Engine, SeqOutput } from "../shared/engine/engine.ts";
import { errorInfo } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { encodeEvent } from "../shared/protocol/codec.ts";
import type { GenerateEvent, GenerateTask } from "../shared/protocol/messages.ts";
import { jobExecutorName, requestShard } from "../shared/protocol/names.ts";
import type { TaskTracker } from "../shared/serving/task.ts";
import { type Env, getConfig } from "./env.ts";

export interface ActiveTask {
  task: GenerateTask;
  tracker: TaskTracker;
  controller: ReadableStreamDefaultController<Uint8Array>;
  seqIds: string[];
  startedAt: number | null;
}

export class TaskStreams {
  private readonly tasks = new Map<string, ActiveTask>();
  /** seqId -> (taskId, choice index) */
  private readonly seqs = new Map<string, { taskId: string; index: number }>();

  constructor(
    private readonly env: Env,
    private readonly ctx: DurableObjectState,
    private readonly log: Logger,
    /** The loaded model's engine (sequences are aborted there), if any. */
    private readonly engine: () => Engine | undefined,
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
    let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
      },
      cancel: () => this.cancel(task.taskId, "client disconnected"),
    });
    const active: ActiveTask = {
      task,
      tracker,
      controller: controller as ReadableStreamDefaultController<Uint8Array>,
      seqIds: [],
      startedAt: null,
    };
    return { active, stream };
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
    if (first) this.report(active.task, { firstTokenAt: now });
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

  emit(active: ActiveTask, ev: GenerateEvent): void {
    try {
      active.controller.enqueue(encodeEvent(ev));
    } catch {
      // the stream is closed (client gone); cancel cleans up
    }
  }

  finish(active: ActiveTask, status: "succeeded" | "failed" | "cancelled", error?: string): void {
    if (!this.tasks.delete(active.task.taskId)) return;
    for (const id of active.seqIds) this.seqs.delete(id);
    try {
      active.controller.close();
    } catch {
      // already closed or cancelled
    }
    this.report(active.task, {
      status,
      finishedAt: Date.now(),
      numPromptTokens: active.tracker.numPromptTokens,
      numCompletionTokens: active.tracker.completionTokens,
      ...(error ? { error } : {}),
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
  failAll(): void {
    for (const active of [...this.tasks.values()]) {
      this.emit(active, {
        type: "error",
        error: errorInfo("internal", "the engine failed; the request was aborted"),
      });
      this.abort(active);
      this.finish(active, "failed", "engine failure");
    }
  }

  /** Reports task progress to the JobExecutor that owns the request (best effort, off the hot path). */
  report(task: GenerateTask, fields: Record<string, unknown>): void {
    const je = this.env.JOB_EXECUTOR.getByName(
      jobExecutorName(requestShard(task.requestId, getConfig(this.env).jobExecutorShards)),
    );
    this.ctx.waitUntil(
      je
        .taskEvent({ requestId: task.requestId, taskId: task.taskId, ...fields })
        .catch((e: unknown) => {
          this.log.warn("task.report_failed", {
            requestId: task.requestId,
            taskId: task.taskId,
            ...errorFields(e),
          });
        }),
    );
  }
}
