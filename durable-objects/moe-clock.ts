/** The clock and timers the comm module uses inside the DOs (moe-attention exchanges). */
import type { CommClock } from "../shared/fabric/comm.ts";

export const wallClock: CommClock = {
  now: () => performance.now(),
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};
