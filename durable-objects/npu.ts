/**
 * Npu: one NPU of an instance. Holds a model's weights and KV cache in its kernel arena (the
 * per-NPU memory budget), runs the engine loop with continuous batching, and streams each task's
 * tokens back as NDJSON GenerateEvents while they are produced. The maths and policies are in
 * shared/; this shell owns loading, the loop, streams and progress reports to the JobExecutor.
 */
import { DurableObject } from "cloudflare:workers";
import { createInstance, type ModelInstance } from "../shared/engine/instance.ts";
import { type ErrorInfo, errorInfo, type Result } from "../shared/errors.ts";
import {
  type FabricStats,
  kvRegionId,
  type RegionKind,
  type RegionMeta,
  type RegionRef,
} from "../shared/fabric/regions.ts";
import { errorFields, Logger, parseLogLevel } from "../shared/log.ts";
import { KernelMemoryError, type Kernels } from "../shared/model/kernels.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";
import type { SampledToken } from "../shared/model/sampler.ts";
import { encodeEvent } from "../shared/protocol/codec.ts";
import type { GenerateEvent, GenerateTask } from "../shared/protocol/messages.ts";
import { jobExecutorName, requestShard } from "../shared/protocol/names.ts";
import { PROTOCOL_VERSION } from "../shared/protocol/version.ts";
import { type PreparedTask, prepareTask, TaskTracker } from "../shared/serving/task.ts";
import kernelsModule from "../wasm/kernels.wasm";
import { type Env, getConfig } from "../workers/env.ts";
import { type ChatRenderer, createChatRenderer } from "./chat-template.ts";
import { FabricHost, type RegionData } from "./fabric-host.ts";

/** Most sequences queued behind the running batch before new tasks are refused (429). */
const MAX_WAITING_SEQS = 256;
/** Recent steps kept for stats(). */
const RECENT_STEPS = 64;

export interface StepSummary {
  stepIndex: number;
  numSeqs: number;
  numScheduledTokens: number;
  durationMs: number;
}

export interface NpuStats {
  model: string | null;
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numBlocks: number;
  numTasks: number;
  memory: { usedBytes: number; capacityBytes: number; weightBytes: number } | null;
  recentSteps: StepSummary[];
}

export interface GenerateAccepted {
  numPromptTokens: number;
  /** NDJSON GenerateEvent lines; ends after the usage event or an error event. */
  stream: ReadableStream<Uint8Array>;
}

/** Where a decode task finds its prompt: the prefill side's first token and KV region. */
export interface Prefilled {
  promptIds: number[];
  first: SampledToken;
  region: RegionRef;
}

/** How long a decode task waits for KV room before giving up (503). */
const HANDOFF_TIMEOUT_MS = 30_000;

interface ActiveTask {
  task: GenerateTask;
  tracker: TaskTracker;
  controller: ReadableStreamDefaultController<Uint8Array>;
  seqIds: string[];
  startedAt: number | null;
}

interface Loaded {
  model: string;
  instance: ModelInstance;
  kernels: Kernels;
  chat: ChatRenderer;
}

export class Npu extends DurableObject<Env> {
  private readonly log: Logger;
  private loaded: Loaded | null = null;
  private loading: Promise<Result<Loaded>> | null = null;
  private readonly tasks = new Map<string, ActiveTask>();
  /** seqId -> (taskId, choice index) */
  private readonly seqs = new Map<string, { taskId: string; index: number }>();
  private looping = false;
  private readonly fabric: FabricHost;
  /** Prefill sequences waiting for their first token: seqId -> resolver. */
  private readonly prefills = new Map<string, (first: SampledToken | null) => void>();
  private readonly name: string;
  private readonly recentSteps: StepSummary[] = [];

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.name = ctx.id.name ?? "";
    this.log = new Logger({ do: "Npu", name: this.name }, parseLogLevel(env.LOG_LEVEL));
    this.fabric = new FabricHost(ctx.storage);
  }

  /** Loads `model` from the R2 registry unless it is loaded already. */
  async load(q: { model: string; r2Key: string }): Promise<Result<{ model: string }>> {
    const r = await this.ensureLoaded(q.model, q.r2Key);
    return r.ok ? { ok: true, value: { model: r.value.model } } : r;
  }

  async stats(): Promise<NpuStats> {
    const inst = this.loaded?.instance;
    return {
      model: this.loaded?.model ?? null,
      numRunning: inst?.scheduler.running.length ?? 0,
      numWaiting: inst?.scheduler.waiting.length ?? 0,
      numFreeBlocks: inst?.scheduler.blocks.numFreeBlocks ?? 0,
      numBlocks: inst?.scheduler.blocks.numBlocks ?? 0,
      numTasks: this.tasks.size,
      memory: inst
        ? {
            usedBytes: this.loaded?.kernels.usedBytes ?? 0,
            capacityBytes: this.loaded?.kernels.capacityBytes ?? 0,
            weightBytes: inst.memory.weightBytes,
          }
        : null,
      recentSteps: [...this.recentSteps],
    };
  }

  /**
   * Starts a task: tokenises, checks the context, queues its sequences and returns the event
   * stream at once. Expected failures (bad prompt, no capacity, unloadable model) are values.
   */
  async generate(
    task: GenerateTask & { r2Key: string; prefilled?: Prefilled },
  ): Promise<Result<GenerateAccepted>> {
    if (task.protocolVersion !== PROTOCOL_VERSION) {
      return fail(
        errorInfo("internal", `protocol version ${task.protocolVersion} != ${PROTOCOL_VERSION}`),
      );
    }
    const loaded = await this.ensureLoaded(task.model, task.r2Key);
    if (!loaded.ok) return loaded;
    const { instance, chat } = loaded.value;
    const engine = instance.engine;
    const prepared = prepareTask(task, instance.tokenizer, engine.maxModelLen, (m) =>
      chat.render(m),
    );
    if (!prepared.ok) return prepared;
    const p = prepared.value;
    if (instance.scheduler.waiting.length + p.seqs.length > MAX_WAITING_SEQS) {
      return fail(
        errorInfo(
          "capacity",
          "the model's instances are at capacity; retry shortly",
          null,
          "rate_limit_exceeded",
        ),
      );
    }
    let controller: ReadableStreamDefaultController<Uint8Array> | undefined;
    const stream = new ReadableStream<Uint8Array>({
      start: (c) => {
        controller = c;
      },
      cancel: () => this.cancelTask(task.taskId, "client disconnected"),
    });
    const tracker = new TaskTracker(p.seqs.length, p.numPromptTokens, instance.tokenizer, task.n);
    const active: ActiveTask = {
      task,
      tracker,
      controller: controller as ReadableStreamDefaultController<Uint8Array>,
      seqIds: [],
      startedAt: null,
    };
    let firstEvents: GenerateEvent[] = [];
    if (task.prefilled) {
      // decode task of a PD job: pull the prompt's KV from the prefill NPU when there is room
      const r = await this.continuePrefilled(task, task.prefilled, p, tracker);
      if (!r.ok) return r;
      active.seqIds.push(r.value.seqId);
      this.seqs.set(r.value.seqId, { taskId: task.taskId, index: 0 });
      firstEvents = r.value.events;
    }
    for (const s of task.prefilled ? [] : p.seqs) {
      const seqId = `${task.taskId}/${s.index}`;
      const err = engine.add(seqId, s.promptIds, p.params, {
        choiceIndex: s.index,
        stripLeadingSpace: p.stripLeadingSpace,
      });
      if (err) {
        for (const id of active.seqIds) engine.abort(id);
        return fail(errorInfo("invalid_request", err, "prompt", "context_length_exceeded"));
      }
      active.seqIds.push(seqId);
      this.seqs.set(seqId, { taskId: task.taskId, index: s.index });
    }
    this.tasks.set(task.taskId, active);
    this.log.info("task.accepted", {
      requestId: task.requestId,
      taskId: task.taskId,
      numSeqs: p.seqs.length,
      numPromptTokens: p.numPromptTokens,
    });
    const now = Date.now();
    if (task.prefilled) {
      active.startedAt = now;
      this.report(active, { status: "running", startedAt: now, firstTokenAt: now });
    }
    for (const ev of firstEvents) this.emit(active, ev);
    if (tracker.done) this.finishTask(active, "succeeded");
    else this.kick();
    return { ok: true, value: { numPromptTokens: p.numPromptTokens, stream } };
  }

  /**
   * Prefill task of a PD job: computes the prompt and its first token in the engine loop (batched
   * with everything else), writes the prompt's KV to a durable fabric region of this NPU, frees
   * the KV blocks, and returns where the decode side can pull the KV from.
   */
  async prefill(task: GenerateTask & { r2Key: string }): Promise<Result<Prefilled>> {
    const loaded = await this.ensureLoaded(task.model, task.r2Key);
    if (!loaded.ok) return loaded;
    const { instance, chat } = loaded.value;
    const prepared = prepareTask(task, instance.tokenizer, instance.engine.maxModelLen, (m) =>
      chat.render(m),
    );
    if (!prepared.ok) return prepared;
    const p = prepared.value;
    const seq = p.seqs[0];
    if (p.seqs.length !== 1 || !seq) {
      return fail(
        errorInfo("invalid_request", "a PD deployment serves one prompt with n = 1", "n"),
      );
    }
    const seqId = `${task.taskId}/prefill`;
    const err = instance.engine.add(
      seqId,
      seq.promptIds,
      { ...p.params, maxTokens: 1, stop: [] },
      { holdKv: true },
    );
    if (err) return fail(errorInfo("invalid_request", err, "prompt", "context_length_exceeded"));
    const startedAt = Date.now();
    const reportTo = { task, startedAt: null } as unknown as ActiveTask;
    this.report(reportTo, { status: "running", startedAt });
    const first = await new Promise<SampledToken | null>((resolve) => {
      this.prefills.set(seqId, resolve);
      this.kick();
    });
    if (!first) {
      this.report(reportTo, { status: "failed", finishedAt: Date.now(), error: "prefill aborted" });
      return fail(errorInfo("internal", "the prefill was aborted"));
    }
    const held = instance.scheduler.getHeld(seqId);
    const kv = new Float32Array(instance.transformer.kvSize(seq.promptIds.length));
    if (held) instance.transformer.exportKv(held.blockTable, seq.promptIds.length, kv);
    instance.scheduler.releaseHeld(seqId);
    const meta = this.fabric.write({
      regionId: kvRegionId(task.taskId),
      kind: "durable",
      bytes: new Uint8Array(kv.buffer),
    });
    const now = Date.now();
    this.report(reportTo, {
      status: "succeeded",
      firstTokenAt: now,
      finishedAt: now,
      numPromptTokens: seq.promptIds.length,
      numCompletionTokens: 1,
    });
    this.log.info("kv.exported", {
      requestId: task.requestId,
      taskId: task.taskId,
      numTokens: seq.promptIds.length,
      bytes: meta.byteLength,
    });
    return {
      ok: true,
      value: {
        promptIds: seq.promptIds,
        first,
        region: {
          owner: this.name,
          regionId: meta.regionId,
          kind: "durable",
          seq: meta.seq,
          byteLength: meta.byteLength,
        },
      },
    };
  }

  /** Pulls a prefilled prompt's KV (waiting for free blocks first) and adds its sequence. */
  private async continuePrefilled(
    task: GenerateTask,
    pre: Prefilled,
    p: PreparedTask,
    tracker: TaskTracker,
  ): Promise<Result<{ seqId: string; events: GenerateEvent[] }>> {
    const { instance } = this.loaded as Loaded;
    const seqId = `${task.taskId}/0`;
    const deadline = Date.now() + HANDOFF_TIMEOUT_MS;
    const owner = this.env.NPU.getByName(pre.region.owner);
    let kv: Float32Array | null = null;
    for (;;) {
      const s = instance.scheduler;
      const room =
        s.running.length < s.config.maxNumSeqs && s.blocks.canGrow([], pre.promptIds.length + 1);
      if (room) {
        if (!kv) {
          const got = await owner.fabricRead({
            regionId: pre.region.regionId,
            minSeq: pre.region.seq,
          });
          if (!got)
            return fail(errorInfo("internal", "the prompt's KV is no longer in the fabric"));
          kv = new Float32Array(got.bytes.buffer, got.bytes.byteOffset, got.bytes.byteLength / 4);
          if (kv.length !== instance.transformer.kvSize(pre.promptIds.length)) {
            return fail(errorInfo("internal", "the prompt's KV has the wrong size"));
          }
        }
        const data = kv;
        const out = instance.engine.addPrefilled(
          seqId,
          pre.promptIds,
          pre.first,
          p.params,
          (table) => instance.transformer.importKv(table, pre.promptIds.length, data),
          { stripLeadingSpace: p.stripLeadingSpace },
        );
        if (out) {
          this.ctx.waitUntil(
            owner.fabricFree({ regionId: pre.region.regionId }).then(() => undefined),
          );
          this.log.info("kv.imported", {
            requestId: task.requestId,
            taskId: task.taskId,
            bytes: kv.byteLength,
          });
          return { ok: true, value: { seqId, events: tracker.onOutput(0, out, Date.now()) } };
        }
      }
      if (Date.now() > deadline) {
        return fail(
          errorInfo(
            "overloaded",
            "no decode capacity for the handoff; retry shortly",
            null,
            "overloaded",
          ),
        );
      }
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  // --- the fabric (this NPU's regions, read and freed by peers)

  async fabricWrite(a: {
    regionId: string;
    kind: RegionKind;
    bytes: Uint8Array;
    seq?: number;
  }): Promise<RegionMeta> {
    return this.fabric.write(a);
  }

  async fabricRead(a: { regionId: string; minSeq?: number }): Promise<RegionData | null> {
    return this.fabric.read(a);
  }

  async fabricWait(a: { regionId: string; minSeq: number; timeoutMs: number }): Promise<boolean> {
    return this.fabric.wait(a);
  }

  async fabricFree(a: { regionId: string }): Promise<boolean> {
    return this.fabric.free(a);
  }

  async fabricStats(): Promise<{ counters: FabricStats; regions: RegionMeta[] }> {
    return { counters: this.fabric.counters(), regions: this.fabric.list() };
  }

  /** Cancels a task (its client went away): aborts its sequences and frees their KV blocks. */
  async cancel(q: { taskId: string; reason: string }): Promise<{ cancelled: boolean }> {
    const found = this.tasks.has(q.taskId);
    this.cancelTask(q.taskId, q.reason);
    return { cancelled: found };
  }

  // --- loading

  private ensureLoaded(model: string, r2Key: string): Promise<Result<Loaded>> {
    if (this.loaded) {
      if (this.loaded.model === model) return Promise.resolve({ ok: true, value: this.loaded });
      return Promise.resolve(
        fail(errorInfo("internal", `this NPU serves ${this.loaded.model}, not ${model}`)),
      );
    }
    this.loading ??= this.loadFromR2(model, r2Key).then((r) => {
      if (r.ok) this.loaded = r.value;
      else this.loading = null; // let a later call retry
      return r;
    });
    return this.loading;
  }

  private async loadFromR2(model: string, r2Key: string): Promise<Result<Loaded>> {
    const t0 = Date.now();
    const obj = await this.env.MODELS.get(r2Key);
    if (!obj)
      return fail(
        errorInfo(
          "not_found",
          `model ${model} has no weights in the registry`,
          "model",
          "model_not_found",
        ),
      );
    const bytes = new Uint8Array(await obj.arrayBuffer());
    const cfg = getConfig(this.env);
    try {
      const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
      const kernels = createWasmKernels(wasm, cfg.npuMemoryBudgetBytes);
      const instance = createInstance(bytes, kernels, {
        maxNumSeqs: cfg.maxNumSeqs,
        maxNumBatchedTokens: cfg.maxNumBatchedTokens,
        blockSize: cfg.blockSize,
      });
      const tok = instance.tokenizer;
      const chat = createChatRenderer(
        instance.file.metadata.get("tokenizer.chat_template") as string | undefined,
        {
          bos: tok.bosId === null ? "" : tok.tokenPiece(tok.bosId),
          eos: tok.eosId === null ? "" : tok.tokenPiece(tok.eosId),
        },
      );
      this.log.info("model.loaded", {
        model,
        sizeBytes: bytes.byteLength,
        numBlocks: instance.memory.numBlocks,
        weightBytes: instance.memory.weightBytes,
        durationMs: Date.now() - t0,
      });
      return { ok: true, value: { model, instance, kernels, chat } };
    } catch (e) {
      this.log.error("model.load_failed", { model, ...errorFields(e) });
      const kind = e instanceof KernelMemoryError ? "capacity" : "internal";
      return fail(errorInfo(kind, `cannot load model ${model}: ${(e as Error).message}`));
    }
  }

  // --- the engine loop

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    this.ctx.waitUntil(this.loop());
  }

  /** schedule -> execute -> update until idle, yielding between steps so new tasks join the batch. */
  private async loop(): Promise<void> {
    const loaded = this.loaded;
    try {
      while (loaded?.instance.engine.hasWork()) {
        const t0 = Date.now();
        const report = await loaded.instance.engine.step();
        const now = Date.now();
        const summary = {
          stepIndex: report.stepIndex,
          numSeqs: report.numSeqs,
          numScheduledTokens: report.numScheduledTokens,
          durationMs: now - t0,
        };
        this.recentSteps.push(summary);
        if (this.recentSteps.length > RECENT_STEPS) this.recentSteps.shift();
        this.log.info("step.completed", summary);
        this.markStarted(report.scheduledSeqIds, t0);
        for (const o of report.outputs) {
          const prefill = this.prefills.get(o.seqId);
          if (prefill && o.finished) {
            this.prefills.delete(o.seqId);
            prefill({
              tokenId: o.newTokenIds[0] as number,
              logprob: o.logprobs[0]?.logprob ?? Number.NaN,
              topLogprobs: o.logprobs[0]?.topLogprobs ?? [],
            });
            continue;
          }
          const ref = this.seqs.get(o.seqId);
          const active = ref && this.tasks.get(ref.taskId);
          if (!ref || !active) continue;
          const first = active.tracker.firstTokenAt === null;
          for (const ev of active.tracker.onOutput(ref.index, o, now)) this.emit(active, ev);
          if (first) this.report(active, { firstTokenAt: now });
          if (o.finished) this.seqs.delete(o.seqId);
          if (active.tracker.done) this.finishTask(active, "succeeded");
        }
        // yield to the event loop: RPCs that arrived during the step (new tasks) run now
        await new Promise((r) => setTimeout(r, 0));
      }
    } catch (e) {
      this.log.error("error.unhandled", { where: "engine loop", ...errorFields(e, true) });
      for (const active of [...this.tasks.values()]) {
        this.emit(active, {
          type: "error",
          error: errorInfo("internal", "the engine failed; the request was aborted"),
        });
        this.abortTask(active);
        this.finishTask(active, "failed", "engine failure");
      }
    } finally {
      this.looping = false;
    }
  }

  /** Marks the tasks whose sequences computed their first tokens in this step as started. */
  private markStarted(scheduledSeqIds: readonly string[], now: number): void {
    for (const seqId of scheduledSeqIds) {
      const ref = this.seqs.get(seqId);
      const active = ref && this.tasks.get(ref.taskId);
      if (!active || active.startedAt !== null) continue;
      active.startedAt = now;
      this.report(active, { status: "running", startedAt: now });
    }
  }

  private emit(active: ActiveTask, ev: GenerateEvent): void {
    try {
      active.controller.enqueue(encodeEvent(ev));
    } catch {
      // the stream is closed (client gone); cancelTask cleans up
    }
  }

  private finishTask(
    active: ActiveTask,
    status: "succeeded" | "failed" | "cancelled",
    error?: string,
  ): void {
    if (!this.tasks.delete(active.task.taskId)) return;
    for (const id of active.seqIds) this.seqs.delete(id);
    try {
      active.controller.close();
    } catch {
      // already closed or cancelled
    }
    this.report(active, {
      status,
      finishedAt: Date.now(),
      numPromptTokens: active.tracker.numPromptTokens,
      numCompletionTokens: active.tracker.completionTokens,
      ...(error ? { error } : {}),
    });
  }

  private abortTask(active: ActiveTask): void {
    const engine = this.loaded?.instance.engine;
    for (const id of active.seqIds) engine?.abort(id);
  }

  private cancelTask(taskId: string, reason: string): void {
    const active = this.tasks.get(taskId);
    if (!active) return;
    this.abortTask(active);
    this.log.info("task.cancelled", { requestId: active.task.requestId, taskId, reason });
    this.finishTask(active, "cancelled", reason);
  }

  /** Reports task progress to the JobExecutor that owns the request (best effort, off the hot path). */
  private report(active: ActiveTask, fields: Record<string, unknown>): void {
    const t = active.task;
    const je = this.env.JOB_EXECUTOR.getByName(
      jobExecutorName(requestShard(t.requestId, getConfig(this.env).jobExecutorShards)),
    );
    this.ctx.waitUntil(
      je.taskEvent({ requestId: t.requestId, taskId: t.taskId, ...fields }).catch((e: unknown) => {
        this.log.warn("task.report_failed", {
          requestId: t.requestId,
          taskId: t.taskId,
          ...errorFields(e),
        });
      }),
    );
  }
}

function fail(error: ErrorInfo): { ok: false; error: ErrorInfo } {
  return { ok: false, error };
}
