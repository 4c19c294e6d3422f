/**
 * EPLB: the greedy replica choice and longest-first placement on hand-made counts, and on a
 * moe-attention instance (in-process) under a skewed workload (every sequence the same prompt,
 * so each layer's router picks the same experts): after a rebalance the measured imbalance of
 * the expert ranks falls and the greedy outputs do not change.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createLocalMoe, type LocalMoe, rebalanceLocal } from "../../../hosts/moe-local.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { checkMap, primaryMap } from "../../../shared/moe/expert-map.ts";
import {
  imbalance,
  placeLayer,
  rankLoads,
  rebalance,
  selectReplicas,
} from "../../../shared/serving/eplb.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

describe("EPLB policy", () => {
  it("measures imbalance as hottest over mean", () => {
    expect(imbalance([10, 10, 10, 10])).toBe(1);
    expect(imbalance([40, 0, 0, 0])).toBe(4);
    expect(imbalance([0, 0])).toBe(1);
  });

  it("adds replicas to the expert that is hottest per replica, greedily", () => {
    // expert 0 carries 60 tokens per slice, expert 1 30, the rest 5
    const slices = [
      [60, 30, 5, 5],
      [60, 30, 5, 5],
    ];
    // 1st replica: expert 0 (60 -> 30). 2nd: experts 0 and 1 are both at 30, neither lowers the
    // hottest load alone; the squared loads break the tie for expert 0 (3 x 20^2 + 30^2 < 2 x
    // 30^2 + 2 x 15^2). 3rd: expert 1 (30 -> 15), the hottest now 20
    expect(selectReplicas(slices, 4, 3, 4)).toEqual([3, 2, 1, 1]);
    expect(selectReplicas([[80, 10, 5, 5]], 4, 3, 4)).toEqual([4, 1, 1, 1]);
    expect(selectReplicas([[80, 10, 5, 5]], 4, 3, 2)).toEqual([2, 1, 1, 1]); // capped
  });

  it("places replicas longest first on the least-loaded rank, only where they help", () => {
    // experts 0,1 on rank 0, 2,3 on rank 1, 4,5 on rank 2; expert 0 is hot: rank loads 100, 20, 40
    const primary = [0, 0, 1, 1, 2, 2];
    const load = [90, 10, 10, 10, 20, 20];
    const placed = placeLayer(primary, [3, 1, 1, 1, 1, 1], load, 3, 1);
    // 1st replica to rank 1: loads 55, 65, 40. A 2nd on rank 2 would make it 70, hotter than
    // expert 0's ranks are now (65): skipped
    expect(placed[0]).toEqual([0, 1]);
    expect(placed.slice(1)).toEqual([[0], [1], [1], [2], [2]]);
    // with two slots per rank and a hotter expert, both replicas help
    expect(placeLayer(primary, [3, 1, 1, 1, 1, 1], [300, 10, 10, 10, 20, 20], 3, 2)[0]).toEqual([
      0, 1, 2,
    ]);
  });

  it("versions the map, keeps primaries and every expert at least once", () => {
    const map = primaryMap(2, 8, 4);
    const slices = [[[50, 1, 1, 1, 1, 1, 1, 1]], [[1, 1, 1, 1, 1, 1, 1, 50]]];
    const next = rebalance(map, slices, { redundantSlotsPerRank: 1, threshold: 1.5, patience: 2 });
    expect(next.version).toBe(2);
    checkMap(next, 8);
    expect(next.replicas[0]?.[0]?.length).toBeGreaterThan(1);
    expect(next.replicas[1]?.[7]?.length).toBeGreaterThan(1);
    expect(next.replicas.map((layer) => layer.map((ranks) => ranks[0]))).toEqual(
      map.replicas.map((layer) => layer.map((ranks) => ranks[0])),
    );
  });
});

const BYTES = new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")));

/** Runs `n` copies of one prompt to completion; returns each sequence's tokens. */
async function runSkewed(m: LocalMoe, n: number): Promise<number[][]> {
  const tok = m.attention[0]!.tokenizer;
  const ids = tok.encode("The little model said hello to the little model");
  const params = { ...GREEDY, maxTokens: 8, ignoreEos: true };
  for (let i = 0; i < n; i++) {
    const a = m.group.pick(ids.length + 8)!;
    m.group.ranks[a]!.engine.add(`s${i}`, ids, params);
  }
  const out = new Map<string, number[]>();
  while (m.group.hasWork()) {
    for (const r of await m.group.step()) {
      for (const o of r?.outputs ?? [])
        out.set(o.seqId, [...(out.get(o.seqId) ?? []), ...o.newTokenIds]);
    }
  }
  return [...out.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([, v]) => v);
}

function meanImbalance(loads: number[][]): number {
  return loads.reduce((a, l) => a + imbalance(l), 0) / loads.length;
}

describe("EPLB on a moe-attention instance", () => {
  it("lowers the measured imbalance under a skewed workload, outputs unchanged", async () => {
    const m = await createLocalMoe(BYTES, {
      attention: 2,
      experts: 4,
      instance: { maxNumSeqs: 8 },
    });
    const before = await runSkewed(m, 8);
    const loadsBefore = await rebalanceLocal(m);
    expect(m.map.current.version).toBe(2);
    const after = await runSkewed(m, 8);
    const loadsAfter = rankLoads(m.experts.map((e) => e.takeTokenCounts()));
    expect(after).toEqual(before);
    // every sequence identical: the same two experts per layer take every token before
    expect(meanImbalance(loadsBefore)).toBeGreaterThan(1.5);
    // measured here: 1.67 before, 1.18 after
    expect(meanImbalance(loadsAfter)).toBeLessThan(meanImbalance(loadsBefore) - 0.2);
    // the same total work, now spread over the replicas
    const total = (ls: number[][]) => ls.flat().reduce((a, b) => a + b, 0);
    expect(total(loadsAfter)).toBe(total(loadsBefore));
    console.log(
      JSON.stringify({
        imbalanceBefore: meanImbalance(loadsBefore),
        imbalanceAfter: meanImbalance(loadsAfter),
      }),
    );
  });
});
