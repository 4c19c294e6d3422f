/**
 * One instance's engine: the schedule -> execute -> update loop plus output processing
 * (incremental detokenisation, stop strings). Pure apart from the executor it is given.
 *
 *   const plan = scheduler.schedule();             // pure
 *   const result = await executor.execute(plan);   // the only I/O
 *   const updates = scheduler.update(plan, result) // pure
 */
import { type ErrorInfo, errorInfo } from "../errors.ts";
import type { SampledToken } from "../model/sampler.ts";
import { attendedPairs, type Executor } from "./executor.ts";
import { type KvUsage, kvUsage } from "./kv-policy/sequence-kv.ts";
import { checkKvCache, type KvCacheSpec } from "./kv-policy/spec.ts";
import { newKvState } from "./kv-policy/state.ts";
import type { Scheduler } from "./scheduler.ts";
import {
  type FinishReason,
  newSequence,
  outstandingTokens,
  type SamplingParams,
  type SeqId,
  type Sequence,
} from "./sequence.ts";

export interface StreamDecoder {
  /** Text completed by this token (partial UTF-8 is held back). */
  push(tokenId: number): string;
  /** Whatever is still held back. */
  flush(): string;
}

export interface DecoderFactory {
  createStreamDecoder(opts?: { stripLeadingSpace?: boolean }): StreamDecoder;
}

export interface AddOptions {
  /** Which of a request's `n` choices this is (part of the sampling key). */
  choiceIndex?: number;
  /**
   * Drop the leading space of the first generated piece (chat answers). Completions keep it:
   * their text continues the prompt.
   */
  stripLeadingSpace?: boolean;
  /** Keep the KV blocks when the sequence finishes (a prefill task of a PD job). */
  holdKv?: boolean;
  /** Output tokens the JobExecutor predicts (load reports only). */
  expectedOutputTokens?: number | null;
  /** Share prefix KV blocks only with sequences of the same salt (Sequence.cacheSalt; ""). */
  cacheSalt?: string;
  /** addPrefilled: prompt tokens the prefill side took from its prefix cache. */
  numCachedTokens?: number;
  /** The sequence's KV-cache policy (absent or "dense": the full cache). */
  kvCache?: KvCacheSpec;
}

/** What an instance reports about itself (its load goes to the JobExecutors with task events). */
export interface EngineStats {
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numBlocks: number;
  /** Prompt tokens still to compute plus tokens still to generate (`outstandingTokens`). */
  numOutstandingTokens: number;
}

/** A wait for room to admit a sequence (`Engine.whenRoom`). */
export interface RoomWait {
  /** true once there is room; false when cancelled. */
  ready: Promise<boolean>;
  cancel(): void;
}

export interface SeqOutput {
  seqId: SeqId;
  /** Tokens generated this step (0 or 1). */
  newTokenIds: number[];
  /** The token sampled this step (with its logprobs when asked for), released or not. */
  sampled: SampledToken;
  /** Text released this step: a stop string, and whole tokens that could start one, held back. */
  text: string;
  /**
   * The tokens whose text is exactly `text` (all the rest on the finishing output): a token that
   * rendered nothing yet (part of a character) comes with the one that completes it, so a
   * continuation elsewhere (request migration) resumes after them, no text lost or repeated.
   */
  tokenIds: number[];
  /** The logprobs of `tokenIds` (when asked for). */
  logprobs: SampledToken[];
  finished: boolean;
  finishReason: FinishReason | null;
  numPromptTokens: number;
  /** Prompt tokens served from the prefix cache. */
  numCachedTokens: number;
  numOutputTokens: number;
  /** On the finishing output of a sequence under a sparse KV-cache policy: its usage. */
  kvCache: KvUsage | null;
}

export interface StepReport {
  stepIndex: number;
  numSeqs: number;
  numScheduledTokens: number;
  numSampled: number;
  /** Attention (query, key) pairs computed (the step's work: serving/step-cost.ts). */
  numAttendedPairs: number;
  /** Sequences that computed tokens this step. */
  scheduledSeqIds: SeqId[];
  preemptedSeqIds: SeqId[];
  outputs: SeqOutput[];
}

interface OutputState {
  decoder: StreamDecoder;
  pending: string;
  /** The tokens of `pending` and where each one's text ends in it (Infinity: none rendered). */
  held: { sampled: SampledToken; end: number }[];
  maxStopLen: number;
  numOutputTokens: number;
}

export class Engine {
  private readonly outputs = new Map<SeqId, OutputState>();
  /** Waits for room (`whenRoom`), checked whenever blocks or sequence slots are freed. */
  private readonly roomWaits = new Set<{ numTokens: number; resolve: (ok: boolean) => void }>();

  constructor(
    readonly scheduler: Scheduler,
    readonly executor: Executor,
    private readonly decoders: DecoderFactory,
    /** f32 bytes of one KV block, all layers (usage.kv_cache.peak_kv_bytes). */
    readonly kvBytesPerBlock = 0,
  ) {}

  get maxModelLen(): number {
    return this.scheduler.config.maxModelLen;
  }

  hasWork(): boolean {
    return this.scheduler.numUnfinished > 0;
  }

  get numBlocks(): number {
    return this.scheduler.blocks.numBlocks;
  }

  get blockSize(): number {
    return this.scheduler.blocks.blockSize;
  }

  stats(): EngineStats {
    const s = this.scheduler;
    return {
      numRunning: s.running.length,
      numWaiting: s.waiting.length,
      numFreeBlocks: s.blocks.numFreeBlocks,
      numBlocks: s.blocks.numBlocks,
      numOutstandingTokens: outstandingTokens(s.running) + outstandingTokens(s.waiting),
    };
  }

  /** True when a sequence of `numTokens` tokens could be admitted now (a slot and its blocks). */
  hasRoomFor(numTokens: number): boolean {
    const s = this.scheduler;
    return s.running.length < s.config.maxNumSeqs && s.blocks.canGrow([], numTokens);
  }

  /**
   * Resolves (true) once `hasRoomFor(numTokens)`: checked after every step and whenever blocks
   * are released, so a caller waits on a promise instead of polling. `cancel()` resolves false.
   */
  whenRoom(numTokens: number): RoomWait {
    if (this.hasRoomFor(numTokens)) return { ready: Promise.resolve(true), cancel: () => {} };
    let wait!: { numTokens: number; resolve: (ok: boolean) => void };
    const ready = new Promise<boolean>((resolve) => {
      wait = { numTokens, resolve };
    });
    this.roomWaits.add(wait);
    return {
      ready,
      cancel: () => {
        if (this.roomWaits.delete(wait)) wait.resolve(false);
      },
    };
  }

  private wakeRoomWaits(): void {
    for (const w of this.roomWaits) {
      if (!this.hasRoomFor(w.numTokens)) continue;
      this.roomWaits.delete(w);
      w.resolve(true);
    }
  }

  /** A finished sequence whose KV blocks are held (`holdKv`), for exporting or pinning them. */
  getHeld(seqId: SeqId): Sequence | undefined {
    return this.scheduler.getHeld(seqId);
  }

  /** Frees the KV blocks of a held sequence. */
  releaseHeld(seqId: SeqId): void {
    this.scheduler.releaseHeld(seqId);
    this.wakeRoomWaits();
  }

  /**
   * Takes a reference on each cached full block of `promptIds`' prefix (an explicit context
   * cache pins them so they are never evicted). Returns the block table to release later.
   */
  pinPrefix(promptIds: readonly number[], cacheSalt = ""): number[] {
    const table: number[] = [];
    this.scheduler.blocks.acquirePrefix(table, promptIds, promptIds.length, cacheSalt);
    return table;
  }

  /** Releases blocks taken with `pinPrefix`. */
  unpinBlocks(table: number[]): void {
    this.scheduler.blocks.free(table);
    this.wakeRoomWaits();
  }

  /**
   * Queues a sequence. Returns the error instead when the prompt cannot run at all (empty, no
   * room in the context for one generated token, or more KV blocks than the instance has).
   */
  add(
    seqId: SeqId,
    promptIds: readonly number[],
    params: SamplingParams,
    opts: AddOptions = {},
  ): ErrorInfo | null {
    if (promptIds.length === 0) return errorInfo("invalid_request", "prompt is empty", "prompt");
    if (promptIds.length >= this.maxModelLen) {
      const msg = `prompt has ${promptIds.length} tokens; the context holds ${this.maxModelLen}`;
      return errorInfo("invalid_request", msg, "prompt", "context_length_exceeded");
    }
    const blocksNeeded = this.scheduler.blocks.blocksFor(promptIds.length + 1);
    if (blocksNeeded > this.scheduler.blocks.numBlocks) {
      const msg = `prompt needs ${blocksNeeded} KV blocks; this instance has ${this.scheduler.blocks.numBlocks}`;
      return errorInfo("invalid_request", msg, "prompt", "context_length_exceeded");
    }
    const kvError = this.kvCheck(opts, promptIds.length);
    if (kvError) return kvError;
    const seq = newSequence(seqId, promptIds, params, opts.choiceIndex ?? 0, opts.cacheSalt);
    this.attachKv(seq, opts);
    seq.holdKv = opts.holdKv ?? false;
    seq.expectedOutputTokens = opts.expectedOutputTokens ?? null;
    this.scheduler.add(seq);
    this.trackOutput(seqId, params, opts);
    return null;
  }

  /**
   * Continues a sequence whose prompt was computed on another instance (PD disaggregation):
   * allocates its blocks, lets `importKv` fill the prompt's K/V into them, and emits the first
   * token (sampled by the prefill side) as this sequence's first output. Returns null when there
   * is no room yet (the caller retries later), else the first token's output.
   */
  addPrefilled(
    seqId: SeqId,
    promptIds: readonly number[],
    first: SampledToken,
    params: SamplingParams,
    importKv: (blockTable: readonly number[]) => void,
    opts: AddOptions = {},
  ): SeqOutput | null {
    const seq = newSequence(
      seqId,
      [...promptIds, first.tokenId],
      params,
      opts.choiceIndex ?? 0,
      opts.cacheSalt,
    );
    seq.numPromptTokens = promptIds.length;
    seq.expectedOutputTokens = opts.expectedOutputTokens ?? null;
    seq.numCachedTokens = opts.numCachedTokens ?? 0;
    // the policy starts here, on the decode side, after the import (checked by the sender)
    this.attachKv(seq, opts);
    if (!this.scheduler.addPrefilled(seq)) return null;
    importKv(seq.blockTable);
    this.trackOutput(seqId, params, opts);
    const reason = this.scheduler.finishIfDone(seq);
    return this.processToken(seq, first, reason !== null);
  }

  /** The 400 for an invalid or unaffordable KV-cache policy, or null. */
  kvCheck(opts: AddOptions, numPromptTokens: number): ErrorInfo | null {
    return opts.kvCache ? checkKvCache(opts.kvCache, this.blockSize, numPromptTokens) : null;
  }

  private attachKv(seq: Sequence, opts: AddOptions): void {
    if (opts.kvCache && opts.kvCache.policy !== "dense") {
      seq.kv = newKvState(opts.kvCache, this.blockSize, seq.numPromptTokens);
    }
  }

  private trackOutput(seqId: SeqId, params: SamplingParams, opts: AddOptions): void {
    this.outputs.set(seqId, {
      decoder: this.decoders.createStreamDecoder({
        stripLeadingSpace: opts.stripLeadingSpace ?? false,
      }),
      pending: "",
      held: [],
      maxStopLen: params.stop.reduce((m, s) => Math.max(m, s.length), 0),
      numOutputTokens: 0,
    });
  }

  /** Aborts a sequence (client gone, cancelled); frees its KV blocks. */
  abort(seqId: SeqId): void {
    this.scheduler.finish(seqId, "abort");
    this.outputs.delete(seqId);
    this.wakeRoomWaits();
  }

  /** One iteration of the loop. */
  async step(): Promise<StepReport> {
    const plan = this.scheduler.schedule();
    const result = plan.seqs.length > 0 ? await this.executor.execute(plan) : { sampled: [] };
    const updates = this.scheduler.update(plan, result);
    const outputs: SeqOutput[] = [];
    for (const u of updates) {
      if (!u.sampled) continue;
      const out = this.processToken(u.seq, u.sampled, u.finished);
      if (out) outputs.push(out);
    }
    // after the outputs: a stop string found there also frees its sequence's blocks
    if (this.roomWaits.size > 0) this.wakeRoomWaits();
    return {
      stepIndex: plan.stepIndex,
      numSeqs: plan.seqs.length,
      numScheduledTokens: plan.numScheduledTokens,
      numSampled: outputs.length,
      numAttendedPairs: plan.seqs.reduce(
        (a, q) => a + attendedPairs(q.startPos, q.tokenIds.length),
        0,
      ),
      scheduledSeqIds: plan.seqs.map((s) => s.seqId),
      preemptedSeqIds: plan.preemptedSeqIds,
      outputs,
    };
  }

  private processToken(seq: Sequence, sampled: SampledToken, finished: boolean): SeqOutput | null {
    const st = this.outputs.get(seq.seqId);
    if (!st) return null;
    st.numOutputTokens++;
    const piece = st.decoder.push(sampled.tokenId);
    st.pending += piece;
    st.held.push({ sampled, end: Number.POSITIVE_INFINITY });
    // a token that renders text completes the tokens before it that rendered none
    for (const h of st.held)
      if (piece && h.end === Number.POSITIVE_INFINITY) h.end = st.pending.length;
    let reason: FinishReason | null = finished ? seq.finishReason : null;
    if (finished) st.pending += st.decoder.flush();
    const cut = this.findStop(st.pending, seq.params.stop);
    if (cut >= 0 && !finished) this.scheduler.finish(seq.seqId, "stop");
    if (cut >= 0) reason = "stop";
    // all out once finished; before, hold back whole tokens whose text could start a stop string
    const limit = reason ? Number.POSITIVE_INFINITY : st.pending.length - (st.maxStopLen || 1) + 1;
    const k = st.held.findIndex((h) => h.end > limit);
    const out = st.held.splice(0, k < 0 ? st.held.length : k);
    const n = reason ? st.pending.length : (out.at(-1)?.end ?? 0);
    const text = st.pending.slice(0, cut >= 0 ? cut : n);
    st.pending = st.pending.slice(n);
    for (const h of st.held) h.end -= n;
    if (reason) this.outputs.delete(seq.seqId);
    return {
      seqId: seq.seqId,
      newTokenIds: [sampled.tokenId],
      sampled,
      text,
      tokenIds: out.map((h) => h.sampled.tokenId),
      logprobs: seq.params.logprobs ? out.map((h) => h.sampled) : [],
      finished: reason !== null,
      finishReason: reason,
      numPromptTokens: seq.numPromptTokens,
      numCachedTokens: seq.numCachedTokens,
      numOutputTokens: st.numOutputTokens,
      kvCache: reason ? kvUsage(seq, this.kvBytesPerBlock) : null,
    };
  }

  private findStop(text: string, stops: readonly string[]): number {
    let best = -1;
    for (const s of stops) {
      if (s.length === 0) continue;
      const i = text.indexOf(s);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }
}
