/**
 * The Npu's task admission: a task's refusals before anything is loaded (another protocol
 * version, a repeated task id), the model load, the queue cap, and the start: a task's sequences
 * join the engine (a PD decode task's one sequence comes from the KV pulled off its prefill NPU)
 * and its event stream is returned at once; a PD prefill task runs until its KV is exported; an
 * explicit context cache's prefix is computed and its KV blocks pinned. Holds the task ids
 * between their arrival and their stream's registration.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import type { GenerateEvent, GenerateTask, Prefilled } from "../shared/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../shared/protocol/version.ts";
import type { Accepted } from "../shared/serving/dispatch.ts";
import { sequencesFor, TaskTracker } from "../shared/serving/task.ts";
import type { ContextPins } from "./context-pins.ts";
import type { KvHandoff } from "./kv-handoff.ts";
import type { NpuLifecycle } from "./npu-lifecycle.ts";
import type { ModelSlot } from "./npu-loader.ts";
import type { TaskStreams } from "./task-streams.ts";

/** Most sequences queued behind the running batch before new tasks are refused (429). */
const MAX_WAITING_SEQS = 256;

export type GenerateAccepted = Accepted<ReadableStream<Uint8Array>>;

/** An explicit context cache's prefix to compute and pin until `expiresAt` (ContextCaches). */
export interface PinPrefix {
  cacheId: string;
  promptIds: number[];
  cacheSalt: string;
  model: string;
  r2Key: string;
  expiresAt: number;
}

/** A task as the JobExecutor sends it to an Npu. */
export type NpuTask = GenerateTask & { r2Key: string; prefilled?: Prefilled };

export interface AdmissionHost {
  slot: ModelSlot;
  streams: TaskStreams;
  handoff: KvHandoff;
  /** KV blocks pinned for explicit context caches. */
  pins: ContextPins;
  lifecycle: NpuLifecycle;
  log: Logger;
  /** New work: the engine loop runs. */
  kick(): void;
  /** Re-arms the Npu's alarm (a prefill's KV region and a pinned prefix expire on it). */
  scheduleAlarm(): Promise<void>;
}

/** Why a task cannot start here before anything is loaded, or null. */
function refusal(task: GenerateTask, starting: ReadonlySet<string>, running: boolean) {
  if (task.protocolVersion !== PROTOCOL_VERSION) {
    return errorInfo(
      "overloaded",
      `this instance speaks protocol version ${PROTOCOL_VERSION}, the task ${task.protocolVersion} ` +
        "(a deployment is rolling out); retry shortly",
      null,
      "protocol_mismatch",
    );
  }
  if (starting.has(task.taskId) || running) {
    return errorInfo("conflict", `task ${task.taskId} is already running`, null, "duplicate_task");
  }
  return null;
}

export class TaskAdmission {
  /**
   * Task ids between their arrival and their stream's registration, and prefill tasks until
   * their KV is exported (a repeated id gets a 409).
   */
  readonly starting = new Set<string>();

  constructor(private readonly host: AdmissionHost) {}

  /**
   * Starts a task: queues its sequences and returns the event stream at once. Expected failures
   * (a repeated task id, another protocol version, no capacity, an unloadable model) are values.
   * A decode task of a PD job (`prefilled`) first pulls its prompt's KV from the prefill NPU.
   */
  async generate(task: NpuTask): Promise<Result<GenerateAccepted>> {
    const refused = refusal(task, this.starting, this.host.streams.has(task.taskId));
    if (refused) return failure(refused);
    this.starting.add(task.taskId);
    try {
      return await this.#start(task);
    } finally {
      this.starting.delete(task.taskId);
      this.host.lifecycle.changed();
    }
  }

  async #start(task: NpuTask): Promise<Result<GenerateAccepted>> {
    const { slot, streams, handoff, log } = this.host;
    const loaded = await slot.ensure(task.model, task.r2Key);
    if (!loaded.ok) return loaded;
    const { instance } = loaded.value;
    const engine = instance.engine;
    const p = sequencesFor(task);
    if (engine.stats().numWaiting + p.seqs.length > MAX_WAITING_SEQS) {
      return failure(
        errorInfo(
          "capacity",
          "the model's instances are at capacity; retry shortly",
          null,
          "rate_limit_exceeded",
        ),
      );
    }
    const tracker = new TaskTracker(p.seqs.length, p.numPromptTokens, instance.tokenizer, task.n);
    const { active, stream } = streams.open(task, tracker);
    let firstEvents: GenerateEvent[] = [];
    if (task.prefilled) {
      const r = await handoff.pull(instance, task, task.prefilled, p, tracker);
      if (!r.ok) return r;
      streams.addSeq(active, r.value.seqId, 0);
      firstEvents = r.value.events;
    }
    for (const s of task.prefilled ? [] : p.seqs) {
      const seqId = `${task.taskId}/${s.index}`;
      const err = engine.add(seqId, s.promptIds, s.params, {
        choiceIndex: s.index,
        stripLeadingSpace: s.stripLeadingSpace,
        cacheSalt: task.cacheSalt,
        expectedOutputTokens: task.expectedOutputTokens,
        ...(task.kvCache ? { kvCache: task.kvCache } : {}),
      });
      if (err) {
        streams.discard(active);
        return failure(err);
      }
      streams.addSeq(active, seqId, s.index);
    }
    streams.start(active);
    log.debug("task.accepted", {
      requestId: task.requestId,
      taskId: task.taskId,
      numSeqs: p.seqs.length,
      numPromptTokens: p.numPromptTokens,
    });
    const now = Date.now();
    if (task.prefilled) {
      active.startedAt = now;
      streams.report(task, { status: "running", startedAt: now, firstTokenAt: now });
    }
    for (const ev of firstEvents) streams.emit(active, ev);
    if (tracker.done) streams.finish(active, "succeeded");
    else this.host.kick();
    return { ok: true, value: { numPromptTokens: p.numPromptTokens, stream } };
  }

  /**
   * Prefill task of a PD job: computes the prompt and its first token in the engine loop (batched
   * with everything else), writes the prompt's KV to a durable fabric region of this NPU, frees
   * the KV blocks, and returns where the decode side can pull the KV from.
   */
  async prefill(task: GenerateTask & { r2Key: string }): Promise<Result<Prefilled>> {
    const refused = refusal(task, this.starting, this.host.streams.has(task.taskId));
    if (refused) return failure(refused);
    this.starting.add(task.taskId); // until its KV is exported: a repeat is a 409
    try {
      const loaded = await this.host.slot.ensure(task.model, task.r2Key);
      if (!loaded.ok) return loaded;
      const r = await this.host.handoff.prefill(loaded.value.instance, task, sequencesFor(task));
      if (r.ok) await this.host.scheduleAlarm(); // the region is freed by the decode side, or expires
      return r;
    } finally {
      this.starting.delete(task.taskId);
      this.host.lifecycle.changed();
    }
  }

  /**
   * An explicit context cache's prefix: loads the model, computes the prompt and pins its full
   * KV blocks until `expiresAt` (the alarm unpins them then).
   */
  async pinPrefix(a: PinPrefix): Promise<Result<{ numTokens: number; numPinnedTokens: number }>> {
    const loaded = await this.host.slot.ensure(a.model, a.r2Key);
    if (!loaded.ok) return loaded;
    const pinned = await this.host.pins.computeAndPin(loaded.value.instance, this.host.handoff, a);
    if (!pinned.ok) return pinned;
    const { numPinnedTokens } = pinned.value;
    await this.host.scheduleAlarm();
    const numTokens = a.promptIds.length;
    this.host.log.info("context_cache.pinned", { cacheId: a.cacheId, numTokens, numPinnedTokens });
    return { ok: true, value: { numTokens, numPinnedTokens } };
  }
}
