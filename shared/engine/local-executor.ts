/**
 * Runs a step plan in-process: one forward over all scheduled tokens, then sampling for the
 * sequences whose chunk reached their end. Pure maths; no I/O.
 */
import { type SampledToken, sampleToken } from "../model/sampler.ts";
import type { Transformer } from "../model/transformer.ts";
import type { Executor, StepPlan, StepResult } from "./executor.ts";

export class LocalExecutor implements Executor {
  private readonly tokenIds: Int32Array;
  private readonly positions: Int32Array;
  private readonly seqIndex: Int32Array;

  constructor(readonly model: Transformer) {
    const t = model.shape.maxNumTokens;
    this.tokenIds = new Int32Array(t);
    this.positions = new Int32Array(t);
    this.seqIndex = new Int32Array(t);
  }

  async execute(plan: StepPlan): Promise<StepResult> {
    return this.executeSync(plan);
  }

  /** The same as execute(), for hosts that want no microtask hop. */
  executeSync(plan: StepPlan): StepResult {
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
    if (row === 0) return { sampled: [] };
    const sparse = plan.seqs.some((s) => s.kv !== undefined);
    const kvPlans = sparse
      ? plan.seqs.map((s) =>
          s.kv && (s.kv.mode !== "none" || s.kv.selectPages > 0)
            ? {
                mode: s.kv.mode,
                selectPages: s.kv.selectPages,
                blocksPerPage: s.kv.blocksPerPage,
                out: s.kv.mode === "none" ? null : new Float32Array(s.blockTable.length),
              }
            : null,
        )
      : undefined;
    const logits = this.model.forward({
      numTokens: row,
      tokenIds: this.tokenIds,
      positions: this.positions,
      seqIndex: this.seqIndex,
      blockTables: plan.seqs.map((s) => s.blockTable),
      logitRows,
      keyShifts: sparse ? plan.seqs.map((s) => s.kv?.keyShift ?? 0) : undefined,
      kvPlans,
    });
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
