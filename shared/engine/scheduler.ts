/**
 * The in-instance scheduler: continuous batching with chunked prefill under a token budget,
 * recompute preemption when KV blocks run out. `schedule()` and `update()` are pure state
 * transitions with no I/O; the executor between them does the maths.
 *
 * Policy per step: running sequences first, in arrival order (a decode takes 1 token, an
 * unfinished prefill takes the rest of its prompt up to the budget); then waiting sequences
 * while the budget, `maxNumSeqs` and free blocks allow. When a running sequence cannot get a
 * block, the most recently admitted running sequence is preempted (vLLM's recompute policy):
 * its blocks are freed and it goes back to the front of the waiting queue.
 */
import { assert } from "../assert.ts";
import type { SampledToken } from "../model/sampler.ts";
import type { ScheduledSeq, StepPlan, StepResult } from "./executor.ts";
import type { KvBlockManager } from "./kv-block-manager.ts";
import { applyKvScores, commitLimit, prepareKv, resetKv } from "./kv-policy/sequence-kv.ts";
import { questPages, scoreMode } from "./kv-policy/state.ts";
import { type FinishReason, numOutputTokens, type SeqId, type Sequence } from "./sequence.ts";

export interface SchedulerConfig {
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
  maxModelLen: number;
  /** Tokens that end generation (EOS and other end-of-generation tokens). */
  eosIds: readonly number[];
}

/** What happened to one sequence in a step. */
export interface SeqUpdate {
  seq: Sequence;
  /** The token sampled this step, or null (a prefill chunk that did not finish the prompt). */
  sampled: SampledToken | null;
  finished: boolean;
}

export class Scheduler {
  readonly waiting: Sequence[] = [];
  readonly running: Sequence[] = [];
  private readonly byId = new Map<SeqId, Sequence>();
  /** Finished sequences whose KV blocks are kept for a handoff (holdKv). */
  private readonly held = new Map<SeqId, Sequence>();
  private stepIndex = 0;

  constructor(
    readonly config: SchedulerConfig,
    readonly blocks: KvBlockManager,
  ) {}

  get numUnfinished(): number {
    return this.waiting.length + this.running.length;
  }

  get(seqId: SeqId): Sequence | undefined {
    return this.byId.get(seqId);
  }

  /** Queues a sequence. The caller has checked that it fits in maxModelLen. */
  add(seq: Sequence): void {
    assert(!this.byId.has(seq.seqId), `duplicate sequence ${seq.seqId}`);
    assert(seq.tokenIds.length > 0, "empty sequence");
    assert(seq.tokenIds.length < this.config.maxModelLen, "sequence longer than maxModelLen");
    seq.status = "waiting";
    this.byId.set(seq.seqId, seq);
    this.waiting.push(seq);
  }

  /**
   * Adds a sequence whose prompt K/V were computed elsewhere: `tokenIds` is the prompt plus the
   * first generated token, and blocks for all of it are allocated now (the caller imports the
   * prompt's K/V into them). Returns false, changing nothing, when the blocks are not free:
   * the caller waits and retries (backpressure on the KV handoff).
   */
  addPrefilled(seq: Sequence): boolean {
    assert(!this.byId.has(seq.seqId), `duplicate sequence ${seq.seqId}`);
    assert(
      seq.tokenIds.length === seq.numPromptTokens + 1,
      "a prefilled sequence carries its first token",
    );
    if (this.running.length >= this.config.maxNumSeqs) return false;
    if (!this.blocks.grow(seq.blockTable, seq.tokenIds.length)) return false;
    if (seq.kv) prepareKv(seq, this.blocks, seq.tokenIds.length, false);
    seq.numComputedTokens = seq.numPromptTokens;
    seq.status = "running";
    this.byId.set(seq.seqId, seq);
    this.running.push(seq);
    this.blocks.commitFull(seq.blockTable, seq.tokenIds, commitLimit(seq), seq.cacheSalt);
    return true;
  }

  /** Ends a prefilled sequence at once when its first token already finished it. */
  finishIfDone(seq: Sequence): FinishReason | null {
    const first = seq.tokenIds[seq.tokenIds.length - 1] as number;
    return this.finishAfterToken(seq, first);
  }

  /** Ends `seq` if its newest token, `tokenId`, finished it (EOS, max tokens, context full). */
  private finishAfterToken(seq: Sequence, tokenId: number): FinishReason | null {
    let reason: FinishReason | null = null;
    if (this.config.eosIds.includes(tokenId) && !seq.params.ignoreEos) reason = "stop";
    else if (numOutputTokens(seq) >= seq.params.maxTokens) reason = "length";
    else if (seq.tokenIds.length >= this.config.maxModelLen) reason = "length";
    if (reason) this.finish(seq.seqId, reason);
    return reason;
  }

  /** A held sequence (finished with holdKv), for exporting its KV. */
  getHeld(seqId: SeqId): Sequence | undefined {
    return this.held.get(seqId);
  }

  /** Frees the KV blocks of a held sequence. */
  releaseHeld(seqId: SeqId): void {
    const seq = this.held.get(seqId);
    if (!seq) return;
    this.held.delete(seqId);
    this.blocks.free(seq.blockTable);
  }

  /** Plans one step. Returns a plan with no sequences when there is nothing to do. */
  schedule(): StepPlan {
    const c = this.config;
    let budget = c.maxNumBatchedTokens;
    const seqs: ScheduledSeq[] = [];
    const preemptedSeqIds: SeqId[] = [];
    const scheduled = new Set<Sequence>();

    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const seq = this.running[i] as Sequence;
      const n = Math.min(seq.tokenIds.length - seq.numComputedTokens, budget);
      // a sparse policy evicts before the step's token may open a page (kv-policy/sequence-kv.ts)
      const shift = seq.kv ? prepareKv(seq, this.blocks, seq.numComputedTokens + n, true) : 0;
      let ok = this.blocks.grow(seq.blockTable, seq.numComputedTokens + n - shift);
      while (!ok) {
        const victim = this.running[this.running.length - 1] as Sequence;
        this.preempt(victim);
        preemptedSeqIds.push(victim.seqId);
        if (victim === seq) break;
        ok = this.blocks.grow(seq.blockTable, seq.numComputedTokens + n - shift);
      }
      if (!ok) break;
      seqs.push(this.plan(seq, n));
      scheduled.add(seq);
      budget -= n;
    }

    while (this.waiting.length > 0 && budget > 0 && this.running.length < c.maxNumSeqs) {
      const seq = this.waiting[0] as Sequence;
      // reuse cached prefix blocks; the last token is always computed, to get its logits
      const cached = this.blocks.acquirePrefix(
        seq.blockTable,
        seq.tokenIds,
        seq.tokenIds.length - 1,
        seq.cacheSalt,
      );
      const n = Math.min(seq.tokenIds.length - cached, budget);
      if (!this.blocks.grow(seq.blockTable, cached + n)) {
        this.blocks.free(seq.blockTable);
        break;
      }
      seq.numComputedTokens = cached;
      if (seq.status === "waiting") seq.numCachedTokens = cached;
      if (seq.kv) prepareKv(seq, this.blocks, cached + n, false);
      this.waiting.shift();
      seq.status = "running";
      this.running.push(seq);
      seqs.push(this.plan(seq, n));
      budget -= n;
    }
    const numScheduledTokens = c.maxNumBatchedTokens - budget;
    return { stepIndex: this.stepIndex++, seqs, numScheduledTokens, preemptedSeqIds };
  }

  private plan(seq: Sequence, n: number): ScheduledSeq {
    const start = seq.numComputedTokens;
    const kv = seq.kv;
    const decode = kv !== null && n === 1 && start >= seq.numPromptTokens;
    const planned: ScheduledSeq = {
      seqId: seq.seqId,
      tokenIds: seq.tokenIds.slice(start, start + n),
      startPos: start,
      blockTable: [...seq.blockTable],
      sample: start + n === seq.tokenIds.length,
      sampler: seq.params,
      choiceIndex: seq.choiceIndex,
    };
    if (kv) {
      planned.kv = {
        keyShift: kv.evictedBlocks * this.blocks.blockSize,
        mode: decode ? scoreMode(kv.spec) : "none",
        selectPages: decode ? questPages(kv.spec) : 0,
        blocksPerPage: kv.blocksPerPage,
        aggregate: kv.spec.aggregate,
      };
    }
    return planned;
  }

  private preempt(seq: Sequence): void {
    const idx = this.running.indexOf(seq);
    assert(idx >= 0, "preempting a sequence that is not running");
    this.running.splice(idx, 1);
    this.blocks.free(seq.blockTable);
    resetKv(seq); // its pages are gone: the recompute rebuilds them
    seq.numComputedTokens = 0;
    seq.status = "preempted";
    this.waiting.unshift(seq);
  }

  /** Applies an executed plan: advances computed counts, appends sampled tokens, finishes sequences. */
  update(plan: StepPlan, result: StepResult): SeqUpdate[] {
    assert(result.sampled.length === plan.seqs.length, "result does not match plan");
    const updates: SeqUpdate[] = [];
    plan.seqs.forEach((s, i) => {
      const seq = this.byId.get(s.seqId);
      if (!seq || seq.status === "finished") return; // aborted while the step ran
      seq.numComputedTokens = s.startPos + s.tokenIds.length;
      this.blocks.commitFull(seq.blockTable, seq.tokenIds, commitLimit(seq), seq.cacheSalt);
      const scores = result.kvScores?.[i];
      if (scores) applyKvScores(seq, scores, s.startPos);
      const sampled = result.sampled[i] ?? null;
      if (!s.sample || !sampled) {
        updates.push({ seq, sampled: null, finished: false });
        return;
      }
      seq.tokenIds.push(sampled.tokenId);
      const reason = this.finishAfterToken(seq, sampled.tokenId);
      updates.push({ seq, sampled, finished: reason !== null });
    });
    return updates;
  }

  /** Finishes a sequence now (stop string, abort, client gone) and frees its blocks. */
  finish(seqId: SeqId, reason: FinishReason): Sequence | undefined {
    const seq = this.byId.get(seqId);
    if (!seq || seq.status === "finished") return seq;
    for (const q of [this.running, this.waiting]) {
      const idx = q.indexOf(seq);
      if (idx >= 0) q.splice(idx, 1);
    }
    if (seq.holdKv && reason !== "abort") this.held.set(seqId, seq);
    else this.blocks.free(seq.blockTable);
    seq.status = "finished";
    seq.finishReason = reason;
    this.byId.delete(seqId);
    return seq;
  }
}
