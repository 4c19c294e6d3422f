/**
 * Placement of a task on one of a model's instances. Pure functions of load snapshots.
 *
 * "Load" of an instance = sequences it is running plus sequences waiting in its queue. The
 * colocated policy picks the least-loaded instance; ties go to the instance with more free KV
 * blocks, then to the first listed (stable).
 */

export interface LoadSnapshot {
  instanceId: string;
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
}

export function load(s: LoadSnapshot): number {
  return s.numRunning + s.numWaiting;
}

/** @throws Error when there are no candidates (callers check first). */
export function pickLeastLoaded(loads: readonly LoadSnapshot[]): LoadSnapshot {
  let best: LoadSnapshot | undefined;
  for (const s of loads) {
    if (
      !best ||
      load(s) < load(best) ||
      (load(s) === load(best) && s.numFreeBlocks > best.numFreeBlocks)
    ) {
      best = s;
    }
  }
  if (!best) throw new Error("no instance to place the task on");
  return best;
}
