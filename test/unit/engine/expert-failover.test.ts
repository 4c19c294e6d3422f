/**
 * Expert-rank failover with one-step replay at the engine level (in-process fabric): while
 * sequences decode on 2 attention ranks and 4 expert ranks, one expert rank's step handling hangs
 * (or throws); the group switches to the failover map (its experts' EPLB replicas, or re-loaded
 * on surviving ranks) mid-step and replays only the (layer, step) exchanges that waited on it.
 * Greedy outputs must equal colocated (the engine's own run without disaggregation), and a
 * group that cannot fail over fails the step with the one error it was given.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { applyMapLocal, createLocalMoe, type LocalMoe } from "../../../hosts/moe-local.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { checkMap, type ExpertMap, liveRanks } from "../../../shared/moe/expert-map.ts";
import { failoverMap } from "../../../shared/serving/expert-failover.ts";
import { instanceFor } from "../../helpers/engine.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

const BYTES = new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")));
const PROMPTS = ["Once upon a time", "The little dog", "Hello", "A cat sat on the mat and"];
const MAX_TOKENS = 8;
const PARAMS = { ...GREEDY, maxTokens: MAX_TOKENS, ignoreEos: true };

async function colocated(): Promise<Map<string, number[]>> {
  const { inst } = await instanceFor(BYTES, "wasm", { maxNumSeqs: 8 });
  PROMPTS.forEach((p, i) => {
    inst.engine.add(`s${i}`, inst.tokenizer.encode(p), PARAMS);
  });
  const out = new Map<string, number[]>();
  while (inst.engine.hasWork()) {
    for (const o of (await inst.engine.step()).outputs) {
      out.set(o.seqId, [...(out.get(o.seqId) ?? []), ...o.newTokenIds]);
    }
  }
  return out;
}

/** A rank's gate: passes until `hang` or `throwOnce` is set for it. */
class Gate {
  hang = -1;
  throwOnce = -1;
  /** Resolves when the faulty rank first stops. */
  hit: Promise<void>;
  private onHit = () => {};
  constructor() {
    this.hit = new Promise((r) => {
      this.onHit = r;
    });
  }
  async pass(rank: number): Promise<void> {
    if (rank === this.throwOnce) {
      this.throwOnce = -1;
      this.onHit();
      throw new Error("injected");
    }
    if (rank !== this.hang) return;
    this.onHit();
    await new Promise<never>(() => {});
  }
}

/** Every rank's attention executors and the host map switch to `map` (what the leader does). */
function broadcast(m: LocalMoe, map: ExpertMap): void {
  m.map.current = map;
  for (const r of m.group.ranks) r.moe.failover(map);
}

async function failOver(m: LocalMoe, failed: number): Promise<ExpertMap> {
  const plan = failoverMap(m.map.current, failed);
  if (!plan) throw new Error("no failover");
  for (const [j, experts] of plan.loads) {
    for (const [l, ids] of experts.entries()) await m.expertShards[j]?.add(l, ids);
  }
  broadcast(m, plan.map);
  return plan.map;
}

/** Runs the prompts to the end; after `faultAfterSteps` group steps the gate's fault applies. */
async function run(
  m: LocalMoe,
  gate: Gate,
  fault: () => void,
  faultAfterSteps: number,
  onHit: () => Promise<void>,
): Promise<Map<string, number[]>> {
  const tok = m.attention[0]!.tokenizer;
  PROMPTS.forEach((p, i) => {
    const ids = tok.encode(p);
    const a = m.group.pick(ids.length + MAX_TOKENS) as number;
    m.group.ranks[a]!.engine.add(`s${i}`, ids, PARAMS);
  });
  const out = new Map<string, number[]>();
  let steps = 0;
  while (m.group.hasWork()) {
    if (steps++ === faultAfterSteps) {
      fault();
      void gate.hit.then(onHit);
    }
    for (const r of await m.group.step()) {
      for (const o of r?.outputs ?? [])
        out.set(o.seqId, [...(out.get(o.seqId) ?? []), ...o.newTokenIds]);
    }
  }
  return out;
}

/** A local moe-attention group of 2 attention ranks whose expert serves pass through a gate. */
async function gated(experts: number) {
  const gate = new Gate();
  const m = await createLocalMoe(BYTES, {
    attention: 2,
    experts,
    instance: { maxNumSeqs: 8 },
    beforeServe: (j) => gate.pass(j),
  });
  return { m, gate };
}

describe("expert-rank failover (in-process fabric)", () => {
  it("plans the map without the failed rank: replicas kept, lone experts re-placed evenly", () => {
    const map: ExpertMap = {
      version: 3,
      numRanks: 3,
      replicas: [
        [[0], [0, 1], [1], [2], [1, 2], [1]],
        [[1], [1], [1], [0], [2], [2]],
      ],
    };
    const plan = failoverMap(map, 1);
    expect(plan).not.toBeNull();
    expect(plan!.map.version).toBe(4);
    expect(plan!.map.down).toEqual([1]);
    checkMap(plan!.map, 6);
    // layer 0: expert 1 and 4 keep a replica; 2 and 5 go to the rank with fewest (0 holds 2, 2 holds 2)
    expect(plan!.map.replicas[0]).toEqual([[0], [0], [0], [2], [2], [2]]);
    // layer 1: 0 holds 1 expert and 2 holds 2: experts 0, 1, 2 go to 0, 0 (now 2 = 2: lower rank), 2
    expect(plan!.map.replicas[1]).toEqual([[0], [0], [2], [0], [2], [2]]);
    expect(plan!.numReplicated).toBe(2);
    expect(plan!.numReloaded).toBe(5);
    expect([...plan!.loads.keys()].sort()).toEqual([0, 2]);
    expect(plan!.loads.get(0)).toEqual([[2], [0, 1]]);
    expect(liveRanks(plan!.map)).toEqual([0, 2]);
    // a second failure leaves one rank with everything; a third has nowhere to go
    const second = failoverMap(plan!.map, 0);
    expect(second!.map.down).toEqual([0, 1]);
    expect(second!.map.replicas.flat().every((r) => r.length === 1 && r[0] === 2)).toBe(true);
    expect(failoverMap(second!.map, 2)).toBeNull();
    expect(() => failoverMap(second!.map, 1)).toThrow(/not a live rank/);
  });

  it("hung rank with every expert replicated: the map switches mid-step, outputs stay colocated", async () => {
    const want = await colocated();
    const { m, gate } = await gated(4);
    // an EPLB map with a second replica of every expert on the next rank
    const base = m.map.current;
    await applyMapLocal(m, {
      version: 2,
      numRanks: 4,
      replicas: base.replicas.map((layer) =>
        layer.map(([r]) => [r as number, ((r as number) + 1) % 4]),
      ),
    });
    let next: ExpertMap | null = null;
    const got = await run(
      m,
      gate,
      () => {
        gate.hang = 1;
      },
      3,
      async () => {
        next = await failOver(m, 1);
      },
    );
    expect(got).toEqual(want);
    expect(next!.down).toEqual([1]);
    // nothing was loaded: the replicas took over; only exchanges that waited on rank 1 replayed
    const replays = m.group.ranks.map((r) => r.moe.numReplays);
    expect(replays.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(replays.every((n) => n <= 1)).toBe(true);
    expect(m.experts[1]!.health().hasWork).toBe(true);
  });

  it("throwing rank without replicas: its experts re-load on the others, outputs stay colocated", async () => {
    const want = await colocated();
    const { m, gate } = await gated(4);
    const before = m.expertShards.map((s) => s.residentBytes);
    const got = await run(
      m,
      gate,
      () => {
        gate.throwOnce = 2;
      },
      2,
      async () => {
        await failOver(m, 2);
      },
    );
    expect(got).toEqual(want);
    expect(m.experts[2]!.health().numFailed).toBe(1);
    expect(m.group.ranks.map((r) => r.moe.numReplays).reduce((a, b) => a + b, 0)).toBeGreaterThan(
      0,
    );
    // rank 2's experts now live on the other ranks as well
    const after = m.expertShards.map((s) => s.residentBytes);
    expect(after[0]! + after[1]! + after[3]!).toBe(before.reduce((a, b) => a + b, 0));
  });

  it("a group that cannot fail over fails the step with the one error it was given", async () => {
    const { m, gate } = await gated(1);
    gate.hang = 0;
    m.attention[0]!.engine.add("s", m.attention[0]!.tokenizer.encode("Hello"), PARAMS);
    expect(failoverMap(m.map.current, 0)).toBeNull();
    void gate.hit.then(() => {
      for (const r of m.group.ranks) r.moe.fail(new Error("expert rank 0 failed: no other rank"));
    });
    await expect(m.group.step()).rejects.toThrow("expert rank 0 failed: no other rank");
  });
});
