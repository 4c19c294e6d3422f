/**
 * The logical -> physical expert map of a moe-attention deployment: for each MoE layer and
 * logical expert, the expert ranks holding a copy (a primary, plus redundant replicas added by
 * EPLB, shared/serving/eplb.ts). Maps are versioned: every step runs on one version from start to
 * end, and a new version takes effect at the next step. Pure.
 */
import { assert } from "../assert.ts";

export interface ExpertMap {
  version: number;
  numRanks: number;
  /** [layer][expert] -> expert ranks holding it (at least one; never the same rank twice). */
  replicas: number[][][];
  /** Ranks failed over (shared/serving/expert-failover.ts): they hold nothing and get no part. */
  down?: number[];
}

/** The ranks of `map` that take parts (all but the failed-over ones), ascending. */
export function liveRanks(map: ExpertMap): number[] {
  return Array.from({ length: map.numRanks }, (_, j) => j).filter((j) => !map.down?.includes(j));
}

/**
 * The primary placement: expert e of every layer on rank floor(e * numRanks / numExperts), so
 * each rank holds a contiguous run (read with one range per tensor).
 */
export function primaryMap(numLayers: number, numExperts: number, numRanks: number): ExpertMap {
  assert(
    numRanks >= 1 && numRanks <= numExperts,
    `need 1..${numExperts} expert ranks, got ${numRanks}`,
  );
  const layer = Array.from({ length: numExperts }, (_, e) => [
    Math.floor((e * numRanks) / numExperts),
  ]);
  return {
    version: 1,
    numRanks,
    replicas: Array.from({ length: numLayers }, () => layer.map((r) => [...r])),
  };
}

/** The experts of `layer` that `rank` holds under `map`. */
export function expertsOnRank(map: ExpertMap, layer: number, rank: number): number[] {
  const out: number[] = [];
  map.replicas[layer]?.forEach((ranks, e) => {
    if (ranks.includes(rank)) out.push(e);
  });
  return out;
}

/** Every expert `rank` holds in any layer (the union: an Expert DO loads these for all layers). */
export function expertsHeldBy(map: ExpertMap, rank: number): number[] {
  const set = new Set<number>();
  for (let l = 0; l < map.replicas.length; l++)
    for (const e of expertsOnRank(map, l, rank)) set.add(e);
  return [...set].sort((a, b) => a - b);
}

/**
 * The rank that serves a token's copy of expert e. `ordinal` is the token's position among the
 * batch's tokens routed to e, plus the attention rank's index: replicas are used in rotation
 * (xDeepServe's communication-free balancing, which rotates on the batch position; counting per
 * expert keeps two hot experts that the same tokens choose from landing on the same replicas).
 */
export function rankFor(map: ExpertMap, layer: number, expert: number, ordinal: number): number {
  const ranks = map.replicas[layer]?.[expert];
  assert(ranks !== undefined && ranks.length > 0, `expert ${expert} of layer ${layer} has no rank`);
  return ranks[ordinal % ranks.length] as number;
}

/** Invariants of a map: every expert has a rank in range, no rank twice. @throws InvariantError */
export function checkMap(map: ExpertMap, numExperts: number): void {
  for (const [l, layer] of map.replicas.entries()) {
    assert(layer.length === numExperts, `layer ${l} maps ${layer.length} of ${numExperts} experts`);
    for (const [e, ranks] of layer.entries()) {
      assert(ranks.length > 0, `expert ${e} of layer ${l} has no replica`);
      assert(new Set(ranks).size === ranks.length, `expert ${e} of layer ${l} twice on one rank`);
      assert(
        ranks.every((r) => r >= 0 && r < map.numRanks),
        `expert ${e} of layer ${l}: rank out of range`,
      );
      assert(
        !ranks.some((r) => map.down?.includes(r)),
        `expert ${e} of layer ${l} on a failed-over rank`,
      );
    }
  }
}
