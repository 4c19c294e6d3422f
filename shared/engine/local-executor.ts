/**
 * Runs a step plan: one forward over all scheduled tokens, then sampling for the sequences whose
 * chunk reached their end. With a MoeExecutor, MoE layers' expert halves go to it (moe-attention:
 * shared/moe/disagg-executor.ts); without, everything runs in-process. Pure apart from it.
 */

import type { MoeExecutor } from "../model/moe-split.ts";
import { type SampledToken, sampleToken } from "../model/sampler.ts";
import type { ForwardBatch, Transformer } from "../model/transformer.ts";
import type { Executor, StepPlan, StepResult } from "./executor.ts";

export class LocalExecutor implements Executor {
  private readonly tokenIds: Int32Array;
  private readonly positions: Int32Array;
  private readonly seqIndex: Int32Array;

  constructor(
    readonly model: Transformer,
    private readonly moe: MoeExecutor | null = null,
  ) {
    const t = model.shape.maxNumTokens;
    this.tokenIds = new Int32Array(t);
    this.positions = new Int32Array(t);
    this.seqIndex = new Int32Array(t);
  }

  async execute(plan: StepPlan): Promise<StepResult> {
    if (!this.moe) return this.executeSync(plan);
    const batch = this.batch(plan);
    if (!batch) return { sampled: [] };
    return this.sample(plan, await this.model.forwardWith(batch, this.moe), batch.kvPlans);
  }

  /** The same as execute() without a MoeExecutor, for hosts that want no microtask hop. */
  executeSync(plan: StepPlan): StepResult {
    const batch = this.batch(plan);
    if (!batch) return { sampled: [] };
    return this.sample(plan, this.model.forward(batch), batch.kvPlans);
  }

  /** The plan's rows as a forward batch (views of this executor's buffers), or null when empty. */
  private batch(plan: StepPlan): ForwardBatch | null {
    let row = 0;
    const logitRows: number[] = [];
    plan.seqs.forEach((s, i) => {
      for (let j = 0; j < s.tokenIds.length; j++) {
        this.tokenIds[row] = s.tokenIds[j] as number;
        this.positions[row] = s.startPos + j;
        this.seqIndex[row] = i;
        row++;
      }
      if (s.sample) logitRows.push(row - 1);
    });
    if (row === 0) return null;
    const sparse = plan.seqs.some((s) => s.kv !== undefined);
    const kvPlans = sparse
      ? plan.seqs.map((s) =>
          s.kv && (s.kv.mode !== "none" || s.kv.selectPages > 0)
            ? {
                mode: s.kv.mode,
                selectPages: s.kv.selectPages,
                blocksPerPage: s.kv.blocksPerPage,
                aggregate: s.kv.aggregate,
                out: s.kv.mode === "none" ? null : new Float32Array(s.blockTable.length),
              }
            : null,
        )
      : undefined;
    return {
      numTokens: row,
      tokenIds: this.tokenIds,
      positions: this.positions,
      seqIndex: this.seqIndex,
      blockTables: plan.seqs.map((s) => s.blockTable),
      logitRows,
      keyShifts: sparse ? plan.seqs.map((s) => s.kv?.keyShift ?? 0) : undefined,
      kvPlans,
    };
  }

  private sample(
    plan: StepPlan,
    logits: Float32Array,
    kvPlans: ForwardBatch["kvPlans"],
  ): StepResult {
    const vocab = this.model.config.vocabSize;
    let k = 0;
    const sampled: (SampledToken | null)[] = plan.seqs.map((s) => {
      if (!s.sample) return null;
      const off = k++ * vocab;
      return sampleToken(
        logits,
        off,
        vocab,
        s.sampler,
        s.choiceIndex,
        s.startPos + s.tokenIds.length,
      );
    });
    if (!kvPlans) return { sampled };
    return { sampled, kvScores: kvPlans.map((p) => (p?.out ? Array.from(p.out) : null)) };
  }
}
