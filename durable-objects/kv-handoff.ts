/**
 * The PD handoff of a prompt's KV between two NPUs over the storage fabric.
 *
 * Prefill side (`prefill`): runs the prompt and its first token in the engine loop (batched with
 * everything else) with the KV held, exports the KV into a durable fabric region of this NPU,
 * frees the KV blocks, and returns where the decode side can pull the KV from.
 * Decode side (`pull`): waits (on the engine's promise, not by polling) for room for the
 * sequence, reads the KV from the owner's fabric, adds the sequence with its first token, and has
 * the owner free the region.
 */
import type { SeqOutput } from "../shared/engine/engine.ts";
import type { ModelInstance } from "../shared/engine/instance.ts";
import type { SamplingParams, Sequence } from "../shared/engine/sequence.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { isKvRegion, kvRegionId } from "../shared/fabric/regions.ts";
import type { Logger } from "../shared/log.ts";
import type { SampledToken } from "../shared/model/sampler.ts";
import type { GenerateEvent, GenerateTask, Prefilled } from "../shared/protocol/messages.ts";
import type { PreparedTask, TaskTracker } from "../shared/serving/task.ts";
import type { Env } from "./env.ts";
import type { FabricHost } from "./fabric-host.ts";
import type { TaskStreams } from "./task-streams.ts";

/** How long a decode task waits for KV room before giving up (503). */
const HANDOFF_TIMEOUT_MS = 30_000;

export interface KvHandoffHost {
  /** This NPU's name: the owner of the regions it exports. */
  name: string;
  env: Env;
  ctx: DurableObjectState;
  log: Logger;
  fabric: FabricHost;
  reports: Pick<TaskStreams, "report" | "observe">;
  /** Starts the engine loop unless it runs. */
  kick(): void;
}

/**
 * A KV handoff region that no decode side pulled (its request died between prefill and decode)
 * is freed after this long.
 */
const KV_REGION_TTL_MS = 5 * 60_000;

export class KvHandoff {
  /** Prefill sequences waiting for their first token: seqId -> resolver. */
  private readonly prefills = new Map<string, (first: SampledToken | null) => void>();

  constructor(private readonly host: KvHandoffHost) {}

  /** The engine failed: every waiting prefill ends as aborted (its caller releases the KV). */
  failAll(): void {
    for (const resolve of this.prefills.values()) resolve(null);
    this.prefills.clear();
  }

  /** The engine loop's hook: takes a prefill sequence's finished output (true when it did). */
  onOutput(o: SeqOutput): boolean {
    const prefill = this.prefills.get(o.seqId);
    if (!prefill || !o.finished) return false;
    this.prefills.delete(o.seqId);
    prefill(o.sampled);
    return true;
  }

  /**
   * Computes a prompt and its first token in the engine loop (batched with everything else),
   * keeping the KV blocks: the caller exports or pins them, then calls releaseHeld(seqId).
   */
  async computePrompt(
    instance: ModelInstance,
    seqId: string,
    promptIds: number[],
    params: SamplingParams,
    cacheSalt: string,
  ): Promise<Result<{ first: SampledToken; held: Sequence }>> {
    const err = instance.engine.add(
      seqId,
      promptIds,
      { ...params, maxTokens: 1, stop: [] },
      { holdKv: true, cacheSalt },
    );
    if (err) return failure(err);
    const first = await new Promise<SampledToken | null>((resolve) => {
      this.prefills.set(seqId, resolve);
      this.host.kick();
    });
    const held = first ? instance.engine.getHeld(seqId) : undefined;
    if (!first || !held) {
      instance.engine.abort(seqId);
      instance.engine.releaseHeld(seqId);
      return failure(errorInfo("internal", "the prompt computation was aborted"));
    }
    return { ok: true, value: { first, held } };
  }

  /** Prefill task of a PD job: the prompt's first token, and its KV exported to the fabric. */
  async prefill(
    instance: ModelInstance,
    task: GenerateTask,
    p: PreparedTask,
  ): Promise<Result<Prefilled>> {
    const { fabric, log, reports } = this.host;
    const seq = p.seqs[0];
    if (p.seqs.length !== 1 || !seq) {
      return failure(
        errorInfo("invalid_request", "a PD deployment serves one prompt with n = 1", "n"),
      );
    }
    const seqId = `${task.taskId}/prefill`;
    const startedAt = Date.now();
    const computed = await this.computePrompt(
      instance,
      seqId,
      seq.promptIds,
      seq.params,
      task.cacheSalt,
    );
    if (!computed.ok) return computed;
    reports.report(task, { status: "running", startedAt });
    const { first, held } = computed.value;
    const kv = new Float32Array(instance.transformer.kvSize(seq.promptIds.length));
    instance.transformer.exportKv(held.blockTable, seq.promptIds.length, kv);
    instance.engine.releaseHeld(seqId);
    const meta = fabric.write({
      regionId: kvRegionId(task.taskId),
      kind: "durable",
      bytes: new Uint8Array(kv.buffer),
    });
    const now = Date.now();
    reports.observe({ endedAt: now, ttftMs: now - startedAt, tpotMs: null });
    reports.report(task, {
      status: "succeeded",
      firstTokenAt: now,
      finishedAt: now,
      numPromptTokens: seq.promptIds.length,
      numCompletionTokens: 1,
    });
    log.info("kv.exported", {
      requestId: task.requestId,
      taskId: task.taskId,
      numTokens: seq.promptIds.length,
      bytes: meta.byteLength,
    });
    return {
      ok: true,
      value: {
        first,
        numCachedTokens: held.numCachedTokens,
        region: {
          owner: this.host.name,
          regionId: meta.regionId,
          kind: "durable",
          seq: meta.seq,
          byteLength: meta.byteLength,
        },
      },
    };
  }

  /**
   * Decode task of a PD job: pulls a prefilled prompt's KV (once the engine has room for it) and
   * adds its sequence as `<taskId>/0`; returns the events of its first token.
   */
  async pull(
    instance: ModelInstance,
    task: GenerateTask,
    pre: Prefilled,
    p: PreparedTask,
    tracker: TaskTracker,
  ): Promise<Result<{ seqId: string; events: GenerateEvent[] }>> {
    const seqId = `${task.taskId}/0`;
    const seq = p.seqs[0];
    if (!seq || p.seqs.length !== 1) {
      return failure(
        errorInfo("invalid_request", "a PD deployment serves one prompt with n = 1", "n"),
      );
    }
    const promptIds = seq.promptIds;
    const engine = instance.engine;
    const owner = this.host.env.NPU.getByName(pre.region.owner);
    const got = await owner.fabricRead({ regionId: pre.region.regionId, minSeq: pre.region.seq });
    if (!got) return failure(errorInfo("internal", "the prompt's KV is no longer in the fabric"));
    const kv = new Float32Array(got.bytes.buffer, got.bytes.byteOffset, got.bytes.byteLength / 4);
    if (kv.length !== instance.transformer.kvSize(promptIds.length)) {
      return failure(errorInfo("internal", "the prompt's KV has the wrong size"));
    }
    const deadline = Date.now() + HANDOFF_TIMEOUT_MS;
    for (;;) {
      const out = engine.addPrefilled(
        seqId,
        promptIds,
        pre.first,
        seq.params,
        (table) => instance.transformer.importKv(table, promptIds.length, kv),
        {
          stripLeadingSpace: seq.stripLeadingSpace,
          cacheSalt: task.cacheSalt,
          expectedOutputTokens: task.expectedOutputTokens,
          numCachedTokens: pre.numCachedTokens,
          ...(task.kvCache ? { kvCache: task.kvCache } : {}),
        },
      );
      if (out) {
        this.host.ctx.waitUntil(
          owner.fabricFree({ regionId: pre.region.regionId }).then(() => undefined),
        );
        this.host.log.info("kv.imported", {
          requestId: task.requestId,
          taskId: task.taskId,
          bytes: kv.byteLength,
        });
        return { ok: true, value: { seqId, events: tracker.onOutput(0, out, Date.now()) } };
      }
      // no room yet: wait until a step or a release frees enough, or give up at the deadline
      const wait = engine.whenRoom(promptIds.length + 1);
      const timer = setTimeout(() => wait.cancel(), Math.max(0, deadline - Date.now()));
      const ready = await wait.ready;
      clearTimeout(timer);
      if (!ready) {
        return failure(
          errorInfo(
            "overloaded",
            "no decode capacity for the handoff; retry shortly",
            null,
            "overloaded",
          ),
        );
      }
    }
  }

  /** Frees the KV regions this NPU exported that nobody pulled within KV_REGION_TTL_MS. */
  expireRegions(now: number): void {
    for (const r of this.host.fabric.list()) {
      if (isKvRegion(r.regionId) && r.writtenAt + KV_REGION_TTL_MS <= now) {
        this.host.fabric.free({ regionId: r.regionId });
        this.host.log.warn("kv.region_expired", { regionId: r.regionId, bytes: r.byteLength });
      }
    }
  }

  /** When the next exported region expires, or null when none is waiting. */
  nextRegionExpiry(): number | null {
    const times = this.host.fabric
      .list()
      .filter((r) => isKvRegion(r.regionId))
      .map((r) => r.writtenAt + KV_REGION_TTL_MS);
    return times.length > 0 ? Math.min(...times) : null;
  }
}
