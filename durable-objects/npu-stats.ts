/**
 * The Npu's stats() snapshot: the loaded model, the engine's counts, its kernel arena's memory,
 * the engine loop's recent steps and slices, and the latest tasks' latencies (the autoscaler's
 * SLO input). A read of the Npu's parts, changing nothing.
 */
import type { EngineStats } from "../shared/engine/engine.ts";
import type { TaskLatency } from "../shared/serving/autoscaler.ts";
import type { EngineLoop, StepSummary } from "./engine-loop.ts";
import type { NpuLifecycle } from "./npu-lifecycle.ts";
import type { Loaded } from "./npu-loader.ts";
import type { TaskStreams } from "./task-streams.ts";

export interface NpuStats extends EngineStats {
  model: string | null;
  numTasks: number;
  memory: {
    usedBytes: number;
    capacityBytes: number;
    weightBytes: number;
    /** Measured around the load (an attention rank's excludes the experts). */
    residentWeightBytes: number;
    /** Bytes fetched from the weight tier for the load (an attention rank: R2 range reads). */
    weightBytesRead: number;
  } | null;
  recentSteps: StepSummary[];
  /** Times the engine loop continued from a fresh invocation (NPU_SLICE_MS). */
  numSlices: number;
  /** Of those, the times its work estimate (not the clock) used the slice up. */
  numSlicesByWork: number;
  draining: boolean;
  /** When a task last ended here (or the Npu started). */
  lastActiveAt: number;
  /** The latest succeeded tasks' TTFT and TPOT (the autoscaler's SLO input). */
  recentTasks: TaskLatency[];
}

const IDLE: EngineStats = {
  numRunning: 0,
  numWaiting: 0,
  numFreeBlocks: 0,
  numBlocks: 0,
  numOutstandingTokens: 0,
};

/** The Npu parts a snapshot reads. */
export interface StatsSources {
  loaded: Loaded | null;
  loop: EngineLoop;
  streams: TaskStreams;
  lifecycle: NpuLifecycle;
}

export function npuStats(s: StatsSources): NpuStats {
  const inst = s.loaded?.instance;
  return {
    model: s.loaded?.model ?? null,
    ...(inst?.engine.stats() ?? IDLE),
    numTasks: s.streams.size,
    memory: inst
      ? {
          usedBytes: s.loaded?.kernels.usedBytes ?? 0,
          capacityBytes: s.loaded?.kernels.capacityBytes ?? 0,
          weightBytes: inst.memory.weightBytes,
          residentWeightBytes: inst.residentWeightBytes,
          weightBytesRead: s.loaded?.bytesRead ?? 0,
        }
      : null,
    recentSteps: [...s.loop.recentSteps],
    numSlices: s.loop.numSlices,
    numSlicesByWork: s.loop.numSlicesByWork,
    draining: s.lifecycle.draining,
    lastActiveAt: s.lifecycle.lastActiveAt,
    recentTasks: [...s.streams.latencies],
  };
}
