/**
 * The Npu's engine loop: schedule -> execute -> update until the engine is idle, yielding to the
 * event loop between steps so that tasks arriving meanwhile join the running batch. Keeps the
 * recent steps for stats() and the preemption count pushed with task reports; hands each step's
 * outputs to the Npu and, if a step throws, lets the Npu fail everything in flight. `numSteps`
 * is the progress counter the JobExecutor's watchdog reads (through Npu.health): a loop that has
 * work but stopped stepping is hung, and `reset` abandons it. A fault injected for drills
 * (`inject`) makes the next step throw, or hangs the loop before it. An invocation runs steps
 * until they used `sliceMs` (a platform CPU limit applies per incoming request or event), counted
 * by the work they did (each step's estimated CPU time, shared/serving/step-cost.ts: deployed, the
 * clock moves only on I/O) and by the clock; then the loop ends and the Npu's alarm, a fresh
 * invocation, continues it.
 */
import type { StepReport } from "../shared/engine/engine.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { SliceBudget } from "../shared/serving/step-cost.ts";

/** Recent steps kept for stats(). */
const RECENT_STEPS = 64;

export interface StepSummary {
  stepIndex: number;
  numSeqs: number;
  numScheduledTokens: number;
  durationMs: number;
}

/**
 * What the loop steps: an Engine, or a moe-attention group leader's lockstep group step (which
 * reports null when this rank had nothing to run).
 */
export interface Steppable {
  hasWork(): boolean;
  step(): Promise<StepReport | null>;
}

export interface EngineLoopHost {
  ctx: DurableObjectState;
  log: Logger;
  /** The loaded model's engine (or group), if any. */
  engine(): Steppable | undefined;
  /** One step's report, with when it started and ended. */
  onStep(report: StepReport, startedAt: number, endedAt: number): void;
  /** A step threw (`error`): everything in flight is failed. */
  onFailure(error: unknown): void;
  /** CPU time one invocation may use before the loop continues from a fresh one. */
  sliceMs: number;
  /** A step's estimated CPU time in ms, from the work it did (`estimatedStepMs`). */
  stepCostMs(report: StepReport): number;
  /** Continues the loop from a fresh invocation (the Npu's alarm kicks it). */
  continueLater(): void;
}

/** A fault a drill injects into the loop (POST /api/faults). */
export type LoopFault = "throw" | "hang";

export class EngineLoop {
  private looping = false;
  /** Bumped by `reset`: a loop of an older generation stops without touching anything. */
  private generation = 0;
  private fault: LoopFault | null = null;
  /** Ends an injected hang (on reset), so the abandoned loop's promise settles. */
  private unhang: (() => void) | null = null;
  /** Sequences the engine preempted since this Npu started. */
  numPreemptions = 0;
  /** Steps completed since this Npu started: the watchdog's progress counter. */
  numSteps = 0;
  /** Times the loop handed over to a fresh invocation (its slice was used up). */
  numSlices = 0;
  /** Of those, the times the work estimate used the slice up (not the clock). */
  numSlicesByWork = 0;
  readonly recentSteps: StepSummary[] = [];

  constructor(private readonly host: EngineLoopHost) {}

  /** Starts the loop unless it runs. */
  kick(): void {
    if (this.looping) return;
    this.looping = true;
    this.host.ctx.waitUntil(this.run(this.generation));
  }

  /** Makes the next step throw, or hangs the loop before it (fault injection). */
  inject(fault: LoopFault): void {
    this.fault = fault;
    this.kick();
  }

  /** Abandons the running loop (hung): the next kick starts a new one. */
  reset(): void {
    this.generation++;
    this.looping = false;
    this.fault = null;
    this.unhang?.();
    this.unhang = null;
  }

  private async run(generation: number): Promise<void> {
    const engine = this.host.engine();
    const current = () => generation === this.generation;
    const budget = new SliceBudget(this.host.sliceMs);
    try {
      while (engine?.hasWork() || this.fault !== null) {
        if (this.fault === "hang") {
          this.fault = null;
          await new Promise<void>((resolve) => {
            this.unhang = resolve;
          });
        }
        if (!current()) return;
        if (this.fault === "throw") {
          this.fault = null;
          throw new Error("fault injection: the engine step threw");
        }
        if (!engine?.hasWork()) break;
        const t0 = Date.now();
        const report = await engine.step();
        if (!current()) return;
        const now = Date.now();
        // a step that returned is progress, with or without a report (a moe-attention rank
        // whose group had nothing to run): the loop is not hung
        this.numSteps++;
        if (!report) {
          await new Promise((r) => setTimeout(r, 0));
          continue;
        }
        this.numPreemptions += report.preemptedSeqIds.length;
        const summary = {
          stepIndex: report.stepIndex,
          numSeqs: report.numSeqs,
          numScheduledTokens: report.numScheduledTokens,
          durationMs: now - t0,
        };
        this.recentSteps.push(summary);
        if (this.recentSteps.length > RECENT_STEPS) this.recentSteps.shift();
        this.host.log.debug("step.completed", summary);
        this.host.onStep(report, t0, now);
        budget.spend(this.host.stepCostMs(report), now - t0);
        if (budget.usedUp && engine.hasWork()) {
          // this invocation has used its slice: a fresh one (the alarm) continues
          this.numSlices++;
          if (budget.usedUpBy === "work") this.numSlicesByWork++;
          this.host.continueLater();
          return;
        }
        // yield to the event loop: RPCs that arrived during the step (new tasks) run now
        await new Promise((r) => setTimeout(r, 0));
      }
    } catch (e) {
      if (!current()) return;
      this.host.log.error("error.unhandled", { where: "engine loop", ...errorFields(e, true) });
      this.host.onFailure(e);
    } finally {
      if (current()) this.looping = false;
    }
  }
}
