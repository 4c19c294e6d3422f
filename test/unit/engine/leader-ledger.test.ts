/** The attention leader's book of the other ranks (LeaderLedger): routing, busy ranks, map resends. */
import { describe, expect, it } from "vitest";
import { LeaderLedger } from "../../../durable-objects/attention-ledger.ts";
import type { AttentionLoad } from "../../../shared/moe/attention-group.ts";
import type { ExpertMap } from "../../../shared/moe/expert-map.ts";

const load = (o: Partial<AttentionLoad> = {}): AttentionLoad => ({
  numRunning: 0,
  numWaiting: 0,
  maxNumSeqs: 4,
  numFreeBlocks: 10,
  numBlocks: 10,
  blockSize: 16,
  ...o,
});
const map = (version: number) => ({ version }) as ExpertMap;

describe("LeaderLedger", () => {
  it("routes to an unreported (idle) rank over a busier leader, then books the placement", () => {
    const ledger = new LeaderLedger(2);
    const own = load({ numRunning: 1, numFreeBlocks: 5 });
    expect(ledger.route(own, 32)).toBe(1);
    // rank 1 now holds 2 of its 10 blocks (booked), still below the leader's 50% KV use
    expect(ledger.route(own, 64)).toBe(1);
    // rank 1 at 6/10 blocks: the leader (5/10) wins
    expect(ledger.route(own, 16)).toBe(0);
  });

  it("a reported load replaces the booked one; a single-rank group always routes to 0", () => {
    const ledger = new LeaderLedger(2);
    ledger.settle(1, { hasWork: true, load: load({ numRunning: 4 }) });
    expect(ledger.anyBusy()).toBe(true);
    expect(ledger.route(load({ numRunning: 3 }), 16)).toBe(0); // rank 1 is full
    expect(new LeaderLedger(1).route(load({ numRunning: 4 }), 16)).toBe(0);
  });

  it("sends each rank a map version once, and again after the rank failed a step", () => {
    const ledger = new LeaderLedger(3);
    expect(ledger.others).toEqual([1, 2]);
    expect(ledger.mapFor(1, map(1))?.version).toBe(1);
    expect(ledger.mapFor(1, map(1))).toBeNull();
    ledger.settle(1, null);
    expect(ledger.mapFor(1, map(1))?.version).toBe(1);
    ledger.sent(2, 2);
    expect(ledger.mapFor(2, map(2))).toBeNull();
    ledger.markBusy(2);
    ledger.clearBusy();
    expect(ledger.anyBusy()).toBe(false);
  });
});
