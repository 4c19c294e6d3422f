/**
 * Failover of an expert rank (xDeepServe 6.4 and 7.2, "every expert keeps at least one replica"):
 * the next expert map without the failed rank. An expert of a layer that EPLB replicated keeps
 * its other replicas; one the failed rank held alone is re-placed on the surviving rank holding
 * the fewest experts of that layer (ties: the lower rank), which loads it before the map is used.
 * Pure.
 */
import { assert } from "../assert.ts";
import { checkMap, type ExpertMap, liveRanks } from "../moe/expert-map.ts";

export interface FailoverPlan {
  /** The next version: `failed` is down and holds nothing. */
  map: ExpertMap;
  /** rank -> [layer] experts it must load before `map` is used (no replica survived). */
  loads: Map<number, number[][]>;
  /** (layer, expert) pairs the failed rank held that a surviving replica now serves alone. */
  numReplicated: number;
  /** (layer, expert) pairs re-placed on a surviving rank (to load). */
  numReloaded: number;
}

/**
 * The map without `failed`, or null when no other rank is up (nothing can serve its experts).
 * @throws InvariantError when `failed` is not a live rank of `map`.
 */
export function failoverMap(map: ExpertMap, failed: number): FailoverPlan | null {
  const live = liveRanks(map);
  assert(live.includes(failed), `expert rank ${failed} is not a live rank of map v${map.version}`);
  const survivors = live.filter((j) => j !== failed);
  if (survivors.length === 0) return null;
  const loads = new Map<number, number[][]>();
  let numReplicated = 0;
  let numReloaded = 0;
  const replicas = map.replicas.map((layer, l) => {
    const held = new Map<number, number>(survivors.map((j) => [j, 0]));
    for (const ranks of layer)
      for (const r of ranks) if (r !== failed) held.set(r, (held.get(r) ?? 0) + 1);
    return layer.map((ranks, e) => {
      if (!ranks.includes(failed)) return [...ranks];
      const rest = ranks.filter((r) => r !== failed);
      if (rest.length > 0) {
        numReplicated++;
        return rest;
      }
      let to = survivors[0] as number;
      for (const j of survivors) if ((held.get(j) as number) < (held.get(to) as number)) to = j;
      held.set(to, (held.get(to) as number) + 1);
      const perLayer = loads.get(to) ?? map.replicas.map(() => [] as number[]);
      (perLayer[l] as number[]).push(e);
      loads.set(to, perLayer);
      numReloaded++;
      return [to];
    });
  });
  const next: ExpertMap = {
    version: map.version + 1,
    numRanks: map.numRanks,
    replicas,
    down: [...(map.down ?? []), failed].sort((a, b) => a - b),
  };
  checkMap(next, map.replicas[0]?.length ?? 0);
  return { map: next, loads, numReplicated, numReloaded };
}
