/**
 * The Npu's engine loop: schedule -> execute -> update until the engine is idle, yielding to the
 * event loop between steps so that tasks arriving meanwhile join the running batch. Keeps the
 * recent steps for stats() and the preemption count pushed with task reports; hands each step's
 * outputs to the Npu and, if a step throws, lets the Npu fail everything in flight.
 */
import type { StepReport } from "../shared/engine/engine.ts";
import { errorFields, type Logger } from "../shared/log.ts";

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
  /** A step threw: everything in flight is failed. */
  onFailure(): void;
}

export class EngineLoop {
  private looping = false;
  /** Sequences the engine preempted since this Npu started. */
  numPreemptions = 0;
  readonly recentSteps: StepSummary[] = [];

  constructor(private readonly host: EngineLoopHost) {}

  /** Starts the loop unless it runs. */
  kick(): void {
    if (this.looping) return;
    this.looping = true;
    this.host.ctx.waitUntil(this.run());
  }

  private async run(): Promise<void> {
    const engine = this.host.engine();
    try {
      while (engine?.hasWork()) {
        const t0 = Date.now();
        const report = await engine.step();
        const now = Date.now();
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
        // yield to the event loop: RPCs that arrived during the step (new tasks) run now
        await new Promise((r) => setTimeout(r, 0));
      }
    } catch (e) {
      this.host.log.error("error.unhandled", { where: "engine loop", ...errorFields(e, true) });
      this.host.onFailure();
    } finally {
      this.looping = false;
    }
  }
}
