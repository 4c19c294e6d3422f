/**
 * The engine loop's CPU slices count work, not only the clock: with `Date.now()` frozen (as a
 * deployed Worker's clock is during pure compute), an invocation still ends once its steps'
 * estimated CPU time reaches the slice, and the loop continues from a fresh invocation until
 * the work is done. The estimate is the real one (estimatedStepMs) for the embedded model. (In
 * workerd, as the loop's own DO, so the Workers types apply.)
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { EngineLoop, type Steppable } from "../../durable-objects/engine-loop.ts";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import type { StepReport } from "../../shared/engine/engine.ts";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { Logger } from "../../shared/log.ts";
import { modelConfigFromGguf } from "../../shared/model/config.ts";
import { estimatedStepMs } from "../../shared/serving/step-cost.ts";

const CONFIG = modelConfigFromGguf(parseGguf(new Uint8Array(DEFAULT_MODEL)));

/** Decode steps of `numSeqs` sequences at growing positions, `numSteps` in all. */
function decodeEngine(numSteps: number, numSeqs: number): Steppable & { done: number } {
  const e = {
    done: 0,
    hasWork: () => e.done < numSteps,
    async step(): Promise<StepReport> {
      const pos = 64 + e.done++;
      return {
        stepIndex: e.done,
        numSeqs,
        numScheduledTokens: numSeqs,
        numSampled: numSeqs,
        numAttendedPairs: numSeqs * (pos + 1),
        scheduledSeqIds: [],
        preemptedSeqIds: [],
        outputs: [],
      };
    },
  };
  return e;
}

afterEach(() => vi.restoreAllMocks());

describe("engine loop slices", () => {
  it("end by the steps' estimated CPU time while the clock stands still", async () => {
    vi.spyOn(Date, "now").mockReturnValue(1_800_000_000_000);
    const engine = decodeEngine(200, 8);
    const sliceMs = 20;
    const invocations: number[] = [];
    let pending: Promise<unknown>[] = [];
    const loop: EngineLoop = new EngineLoop({
      ctx: { waitUntil: (p: Promise<unknown>) => pending.push(p) } as unknown as DurableObjectState,
      log: new Logger({}, "error"),
      engine: () => engine,
      onStep: () => {},
      onFailure: () => {
        throw new Error("no step fails here");
      },
      sliceMs,
      stepCostMs: (r) => estimatedStepMs(CONFIG, r),
      continueLater: () => invocations.push(engine.done),
    });
    // each invocation: run it to its end; the alarm (here: the next kick) continues
    for (let i = 0; i < 1000 && engine.hasWork(); i++) {
      loop.kick();
      const running = pending;
      pending = [];
      await Promise.all(running);
    }
    expect(engine.done).toBe(200);
    expect(loop.numSlices).toBe(invocations.length);
    expect(loop.numSlicesByWork).toBe(loop.numSlices);
    // every slice but the last used about sliceMs of estimated work: no more than one step past
    let prev = 0;
    for (const at of invocations) {
      let ms = 0;
      for (let s = prev; s < at; s++) {
        ms += estimatedStepMs(CONFIG, {
          numScheduledTokens: 8,
          numSampled: 8,
          numAttendedPairs: 8 * (64 + s + 1),
        });
      }
      expect(ms).toBeGreaterThanOrEqual(sliceMs);
      expect(
        ms -
          estimatedStepMs(CONFIG, {
            numScheduledTokens: 8,
            numSampled: 8,
            numAttendedPairs: 8 * (64 + at),
          }),
      ).toBeLessThan(sliceMs);
      prev = at;
    }
    expect(invocations.length).toBeGreaterThanOrEqual(2);
  });
});
