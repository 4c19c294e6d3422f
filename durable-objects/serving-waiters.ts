/**
 * The InstancePool's waiters for a serving deployment (creating a deployment, a scale with
 * `wait`, scale from zero): each waits until its deployment serves the instances per role it
 * needs, until nothing of it is starting any more (a start failed), or until its timeout. The
 * pool wakes them whenever an instance starts serving or fails.
 */
import type { RoleCounts } from "../shared/types/instances.ts";

interface Waiter {
  depId: string;
  need: Partial<RoleCounts>;
  done: () => void;
}

export class ServingWaiters {
  #waiters: Waiter[] = [];

  constructor(
    /** True when the deployment serves at least `need[role]` instances of each role. */
    private readonly serves: (depId: string, need: Partial<RoleCounts>) => boolean,
    /** Whether any instance of the deployment is still starting. */
    private readonly starting: (depId: string) => boolean,
  ) {}

  /**
   * Resolves true once the deployment serves `need` (instances per role), or false after
   * `timeoutMs` or once nothing is starting any more (a start failed).
   */
  when(depId: string, need: Partial<RoleCounts>, timeoutMs: number): Promise<boolean> {
    if (this.serves(depId, need)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: Waiter = {
        depId,
        need,
        done: () => {
          clearTimeout(timer);
          resolve(this.serves(depId, need));
        },
      };
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((x) => x !== w);
        resolve(false);
      }, timeoutMs);
      this.#waiters.push(w);
    });
  }

  /** Settles every waiter whose deployment now serves what it needs or has nothing starting. */
  wake(): void {
    const keep: Waiter[] = [];
    for (const w of this.#waiters) {
      if (this.serves(w.depId, w.need) || !this.starting(w.depId)) w.done();
      else keep.push(w);
    }
    this.#waiters = keep;
  }
}
