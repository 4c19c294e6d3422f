/**
 * The comm module's attempts (shared/fabric/comm.ts): a replayed exchange's parts (attempt n)
 * gather apart from the step's own (attempt 0), and a gather given up (`abandon`) stops its timer,
 * never settles, and drops the parts that still arrive for it as late.
 */
import { describe, expect, it } from "vitest";
import {
  type CommClock,
  CommCounters,
  type CommMessage,
  Inbox,
} from "../../../shared/fabric/comm.ts";

/** A clock whose timers run only when the test advances it. */
function manualClock() {
  let now = 0;
  const timers: { at: number; fn: () => void }[] = [];
  const clock: CommClock = {
    now: () => now,
    after: (ms, fn) => {
      const t = { at: now + ms, fn };
      timers.push(t);
      return () => {
        timers.splice(timers.indexOf(t), 1);
      };
    },
  };
  const advance = (ms: number) => {
    now += ms;
    for (const t of timers.filter((x) => x.at <= now)) {
      timers.splice(timers.indexOf(t), 1);
      t.fn();
    }
  };
  return { clock, advance, pending: () => timers.length };
}

const part = (from: number, attempt?: number): CommMessage => ({
  kind: "e2a",
  step: 4,
  layer: 1,
  from,
  ...(attempt === undefined ? {} : { attempt }),
  bytes: new Uint8Array(8),
});

describe("Inbox attempts", () => {
  it("gathers each attempt apart; an abandoned gather never settles and drops late parts", async () => {
    const { clock, advance, pending } = manualClock();
    const inbox = new Inbox(clock, new CommCounters());
    let first: CommMessage[] | Error | null = null;
    inbox.gather("e2a", 4, 1, [0, 1], 1_000).then(
      (p) => {
        first = p;
      },
      (e: Error) => {
        first = e;
      },
    );
    inbox.deliver(part(0));
    // the replay: attempt 1 waits on rank 0 only
    const replay = inbox.gather("e2a", 4, 1, [0], 1_000, 1);
    inbox.abandon("e2a", 4, 1, 0);
    expect(pending()).toBe(1); // only the replay's timer is left
    inbox.deliver(part(1)); // the failed rank's late part for attempt 0
    expect(inbox.numLate).toBe(1);
    inbox.deliver(part(0, 1));
    expect((await replay).map((m) => [m.from, m.attempt])).toEqual([[0, 1]]);
    advance(5_000);
    await Promise.resolve();
    expect(first).toBeNull();
    // a duplicate names its attempt
    inbox.deliver(part(2, 2));
    expect(() => inbox.deliver(part(2, 2))).toThrow(/attempt 2/);
  });
});
