/**
 * Two micro-batches per attention rank that ping-pong (xDeepServe's dual micro-batch overlap):
 * a step's sequences split into two halves, each with its own activation buffers
 * (Transformer.twin: same weights and KV cache) and its own DisaggMoe, and both forwards run at
 * once, so while one half waits for its experts (A2E/E2A) the other computes attention. Expert
 * ranks see each half as an exchange step of its own (steps 2s and 2s + 1 of group step s; an
 * idle half sends empty parts), so their barrier is unchanged. Rows never depend on the rows
 * they share a batch with, so outputs equal one micro-batch's bit for bit. Pure apart from the
 * peers and clock the DisaggMoes were given.
 */

import type { Executor, StepPlan, StepResult } from "../engine/executor.ts";
import { LocalExecutor } from "../engine/local-executor.ts";
import { CommCounters, type CommMessage } from "../fabric/comm.ts";
import type { Transformer } from "../model/transformer.ts";
import type { DisaggMoe, DisaggMoeOptions } from "./disagg-executor.ts";
import type { ExpertMap } from "./expert-map.ts";

type Pair = readonly [DisaggMoe, DisaggMoe];

/** A rank's two DisaggMoes, driven as one by a group step. */
export class PingPongMoe {
  constructor(readonly halves: Pair) {}

  get counters(): CommCounters {
    return this.halves[0].counters;
  }

  /** (layer, step) exchanges replayed after a failover, both halves. */
  get numReplays(): number {
    return this.halves[0].numReplays + this.halves[1].numReplays;
  }

  /** The first exchange step of the current group step (halves[1] is one after it). */
  get step(): number {
    return this.halves[0].step;
  }

  deliver(msg: CommMessage): void {
    (this.halves[msg.step % 2] as DisaggMoe).deliver(msg);
  }

  beginStep(): void {
    for (const h of this.halves) h.beginStep();
  }

  async endStep(): Promise<void> {
    await Promise.all(this.halves.map((h) => h.endStep()));
  }

  abortStep(): void {
    for (const h of this.halves) h.abortStep();
  }

  /** An expert rank failed over: both halves use `map` from now on (DisaggMoe.failover). */
  failover(map: ExpertMap): void {
    for (const h of this.halves) h.failover(map);
  }

  /** An expert rank failed and could not be failed over (DisaggMoe.fail). */
  fail(error: Error): void {
    for (const h of this.halves) h.fail(error);
  }
}

/**
 * Runs a plan as two micro-batches: its sequences cut in two runs of about equal tokens, each
 * through its own LocalExecutor (over a twin Transformer and a DisaggMoe of `moe`), at once.
 */
export class PingPongExecutor implements Executor {
  constructor(
    private readonly halves: readonly [LocalExecutor, LocalExecutor],
    private readonly moe: PingPongMoe,
  ) {}

  async execute(plan: StepPlan): Promise<StepResult> {
    let cut = 1;
    let tokens = plan.seqs[0]?.tokenIds.length ?? 0;
    while (cut < plan.seqs.length - 1 && 2 * tokens < plan.numScheduledTokens) {
      tokens += (plan.seqs[cut++] as StepPlan["seqs"][number]).tokenIds.length;
    }
    const parts = [plan.seqs.slice(0, cut), plan.seqs.slice(cut)];
    // each half's compute is timed from when it starts running, not from the group step's start
    const run = (i: 0 | 1): Promise<StepResult> => {
      const seqs = parts[i] as StepPlan["seqs"];
      // a half with nothing to run frees the experts' barrier for its step at once
      if (seqs.length === 0) return this.moe.halves[i].idle().then(() => ({ sampled: [] }));
      this.moe.halves[i].beginStep();
      const n = seqs.reduce((a, s) => a + s.tokenIds.length, 0);
      return this.halves[i].execute({ ...plan, seqs, numScheduledTokens: n });
    };
    const [a, b] = await Promise.all([run(0), run(1)]); // half 1 starts when half 0 first waits
    const sampled = [...a.sampled, ...b.sampled];
    if (!a.kvScores && !b.kvScores) return { sampled };
    const scores = (r: StepResult) => r.kvScores ?? r.sampled.map(() => null);
    return { sampled, kvScores: [...scores(a), ...scores(b)] };
  }
}

/**
 * An attention rank's executor over `t` and its MoE side: one DisaggMoe, or with two
 * micro-batches a ping-pong pair (over `t` and its twin). `make` builds a DisaggMoe with the
 * micro-batch options given.
 */
export function attentionExecutor(
  t: Transformer,
  microBatches: number,
  make: (microBatch?: DisaggMoeOptions["microBatch"]) => DisaggMoe,
): { executor: Executor; moe: DisaggMoe | PingPongMoe } {
  if (microBatches !== 2) {
    const moe = make();
    return { executor: new LocalExecutor(t, moe), moe };
  }
  const counters = new CommCounters();
  const moe = new PingPongMoe([
    make({ index: 0, count: 2, counters }),
    make({ index: 1, count: 2, counters }),
  ]);
  const halves = [t, t.twin()].map((x, i) => new LocalExecutor(x, moe.halves[i]));
  return { executor: new PingPongExecutor(halves as [LocalExecutor, LocalExecutor], moe), moe };
}
