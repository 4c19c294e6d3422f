/**
 * An expert rank of a moe-attention deployment (xDeepServe's MoE die): per (step, MoE layer) it
 * waits for every attention rank's A2E part (an explicit empty part included), runs each of its
 * experts once on the rows gathered from all parts, and sends each attention rank the outputs of
 * its pairs (E2A). It counts tokens per (layer, expert) for EPLB and the batch each expert saw.
 * Arrival-driven: the first part of a (step, layer) starts its gather; nothing polls. A replayed
 * part (attempt > 0: an attention rank re-dispatches a (layer, step) after another expert rank
 * failed over) is served on its own at once, without the barrier. `health()` is its progress
 * counter for the failover watch (shared/serving/expert-watch.ts). Pure apart from the peers,
 * clock and fault hook the host gives.
 */

import {
  type CommClock,
  CommCounters,
  type CommMessage,
  type CommPeer,
  CommTimeoutError,
  decodeA2e,
  encodeE2a,
  Inbox,
  send,
} from "../fabric/comm.ts";
import type { ModelConfig } from "../model/config.ts";
import type { ExpertShard } from "../model/expert-shard.ts";
import type { Kernels } from "../model/kernels.ts";
import { allocExpertWorkspace, type ExpertWorkspace, runExperts } from "../model/moe-split.ts";

export interface ExpertRankOptions {
  rank: number;
  numAttentionRanks: number;
  /** Most token rows one attention rank sends per step (its scheduler's token budget). */
  maxTokensPerRank: number;
  config: ModelConfig;
  kernels: Kernels;
  shard: ExpertShard;
  attention: (rank: number) => CommPeer;
  clock: CommClock;
  timeoutMs: number;
  /**
   * Awaited after a (layer, step)'s parts are in and before its experts run: the host's fault
   * hook (a drill's `throw` rejects it once, `hang` never settles it).
   */
  beforeServe?: () => Promise<void>;
}

/** An expert rank's progress, for the failover watch. */
export interface ExpertRankHealth {
  /** (layer, step) parts served (experts run, outputs sent or sending). */
  numServed: number;
  /** Serves that threw. */
  numFailed: number;
  /** A (layer, step) whose parts are all in waits for its experts to run. */
  hasWork: boolean;
  lastError: string | null;
}

export interface ExpertRankStats {
  rank: number;
  experts: number[];
  residentBytes: number;
  bytesRead: number;
  /** [layer][expert] tokens served since the last `takeTokenCounts`. */
  tokenCounts: number[][];
  /** Expert invocations and the rows they ran on (mean batch = rows / invocations). */
  expertCalls: number;
  expertRows: number;
  computeMs: number;
  stepsServed: number;
  lastError: string | null;
}

export class ExpertRank {
  readonly counters = new CommCounters();
  readonly inbox: Inbox;
  private readonly ws: ExpertWorkspace;
  private readonly input: Float32Array;
  private readonly output: Float32Array;
  private readonly pairRow: Int32Array;
  private readonly pairExpert: Int32Array;
  private tokenCounts: number[][];
  private expertCalls = 0;
  private expertRows = 0;
  private computeMs = 0;
  private stepsServed = 0;
  private numFailed = 0;
  /** (layer, step, attempt) whose parts are in and whose experts have not run yet. */
  private readonly waiting = new Set<string>();
  private lastError: string | null = null;

  constructor(private readonly o: ExpertRankOptions) {
    const c = o.config;
    const maxRows = o.numAttentionRanks * o.maxTokensPerRank;
    const maxPairs = maxRows * c.numExpertsPerTok;
    this.inbox = new Inbox(o.clock, this.counters);
    this.ws = allocExpertWorkspace(o.kernels, c, maxRows, maxPairs);
    this.input = o.kernels.alloc(maxRows * c.hiddenSize);
    this.output = o.kernels.alloc(maxPairs * c.hiddenSize);
    this.pairRow = new Int32Array(maxPairs);
    this.pairExpert = new Int32Array(maxPairs);
    this.tokenCounts = this.zeroCounts();
  }

  /**
   * A part from an attention rank; the first of its (step, layer) starts serving that layer (a
   * replayed part is served alone).
   */
  deliver(msg: CommMessage): void {
    if (msg.kind !== "a2e") throw new Error(`expert rank got a ${msg.kind} message`);
    const attempt = msg.attempt ?? 0;
    const first = this.inbox.count("a2e", msg.step, msg.layer, attempt) === 0;
    this.inbox.deliver(msg);
    if (attempt > 0 || first) {
      const senders =
        attempt > 0 ? [msg.from] : Array.from({ length: this.o.numAttentionRanks }, (_, a) => a);
      this.serve(msg.step, msg.layer, attempt, senders).catch((e: unknown) => {
        // a missing attention part is not this rank's failure
        if (!(e instanceof CommTimeoutError)) this.numFailed++;
        this.lastError = (e as Error).message;
      });
    }
  }

  health(): ExpertRankHealth {
    return {
      numServed: this.stepsServed,
      numFailed: this.numFailed,
      hasWork: this.waiting.size > 0,
      lastError: this.lastError,
    };
  }

  private async serve(
    step: number,
    layer: number,
    attempt: number,
    senders: number[],
  ): Promise<void> {
    const o = this.o;
    const messages = await this.inbox.gather("a2e", step, layer, senders, o.timeoutMs, attempt);
    const id = `${step}/${layer}/${attempt}`;
    this.waiting.add(id);
    let sent: Promise<void>;
    try {
      await o.beforeServe?.();
      sent = this.compute(step, layer, attempt, messages);
    } finally {
      this.waiting.delete(id);
    }
    // an attention rank that refuses its outputs is not this rank's failure
    await sent.catch((e: unknown) => {
      this.lastError = (e as Error).message;
    });
  }

  /** Runs the experts on the parts' rows and sends each sender its outputs (E2A). */
  private compute(
    step: number,
    layer: number,
    attempt: number,
    messages: CommMessage[],
  ): Promise<void> {
    const o = this.o;
    const c = o.config;
    const h = c.hiddenSize;
    const parts = messages.map((m) => decodeA2e(m.bytes, h));
    // gather every part's rows and pairs into one batch
    let rows = 0;
    let pairs = 0;
    const counts = this.tokenCounts[layer] as number[];
    for (const p of parts) {
      this.input.set(p.rows, rows * h);
      for (let i = 0; i < p.pairs.length; i += 2) {
        const e = p.pairs[i + 1] as number;
        this.pairRow[pairs] = rows + (p.pairs[i] as number);
        this.pairExpert[pairs] = e;
        counts[e] = (counts[e] as number) + 1;
        pairs++;
      }
      rows += p.numTokens;
    }
    if (pairs > 0) {
      const t0 = o.clock.now();
      const shard = o.shard;
      runExperts(
        o.kernels,
        this.ws,
        c,
        this.input,
        this.pairRow,
        this.pairExpert,
        pairs,
        (e) => shard.weightsOf(layer, e),
        this.output,
      );
      const ms = o.clock.now() - t0;
      this.computeMs += ms;
      this.counters.computed(layer, step, ms);
      const distinct = new Set(this.pairExpert.subarray(0, pairs));
      this.expertCalls += distinct.size;
      this.expertRows += pairs;
    }
    this.stepsServed++;
    // E2A: each attention rank that sent pairs gets their outputs, in its pair order
    let at = 0;
    const sends: Promise<void>[] = [];
    parts.forEach((p, i) => {
      const n = p.pairs.length / 2;
      if (n === 0) return;
      const bytes = encodeE2a(this.output.subarray(at * h), n, h);
      at += n;
      const msg: CommMessage = { kind: "e2a", step, layer, attempt, from: o.rank, bytes };
      const to = (messages[i] as CommMessage).from;
      sends.push(send(o.attention(to), this.counters, msg, n * h * 4));
    });
    return Promise.all(sends).then(() => {});
  }

  /** Per-expert token counts since the last call, then zeroed (EPLB collects them). */
  takeTokenCounts(): number[][] {
    const out = this.tokenCounts;
    this.tokenCounts = this.zeroCounts();
    return out;
  }

  stats(): ExpertRankStats {
    return {
      rank: this.o.rank,
      experts: [...new Set(this.tokenCounts.flatMap((_, l) => this.o.shard.expertsIn(l)))].sort(
        (a, b) => a - b,
      ),
      residentBytes: this.o.shard.residentBytes,
      bytesRead: this.o.shard.bytesRead,
      tokenCounts: this.tokenCounts.map((l) => [...l]),
      expertCalls: this.expertCalls,
      expertRows: this.expertRows,
      computeMs: this.computeMs,
      stepsServed: this.stepsServed,
      lastError: this.lastError,
    };
  }

  private zeroCounts(): number[][] {
    const c = this.o.config;
    return Array.from({ length: c.numHiddenLayers }, () => new Array<number>(c.numExperts).fill(0));
  }
}
