/**
 * Expert load balancing (xDeepServe's EPLB, digest section 6): from per-expert token counts,
 * measure the imbalance of the expert ranks (hottest rank's tokens over the mean rank's), choose
 * redundant replicas of hot experts greedily (per layer: add the replica that most lowers the sum
 * over time slices of the slice's hottest per-replica load; unlike the paper, ties between equally
 * hot experts are broken by the squared loads, so two equal hot experts both get replicas instead
 * of the loop stopping), place them longest-first on the
 * least-loaded rank with a free redundant slot, and produce the next version of the expert map.
 * Tokens are spread over an expert's replicas at dispatch (`rankFor`). Pure.
 */
import { assert } from "../assert.ts";
import { checkMap, type ExpertMap } from "../moe/expert-map.ts";

export interface EplbOptions {
  /** Redundant expert slots per rank and layer (xDeepServe's redundancy budget, per rank). */
  redundantSlotsPerRank: number;
  /** Automatic rebalance once the imbalance stays above this for `patience` collections. */
  threshold: number;
  patience: number;
}

export const DEFAULT_EPLB: EplbOptions = { redundantSlotsPerRank: 1, threshold: 1.5, patience: 2 };

/** Hottest over mean of `loads`; 1 when all are equal, and when there is no load at all. */
export function imbalance(loads: readonly number[]): number {
  const total = loads.reduce((a, b) => a + b, 0);
  if (total === 0 || loads.length === 0) return 1;
  return Math.max(...loads) / (total / loads.length);
}

/** [layer][rank] tokens from each rank's measured [layer][expert] counts. */
export function rankLoads(countsByRank: readonly (readonly (readonly number[])[])[]): number[][] {
  const numLayers = Math.max(0, ...countsByRank.map((c) => c.length));
  return Array.from({ length: numLayers }, (_, l) =>
    countsByRank.map((c) => (c[l] ?? []).reduce((a, b) => a + b, 0)),
  );
}

/** [layer][expert] tokens summed over ranks (an expert's replicas together). */
export function expertLoads(countsByRank: readonly (readonly (readonly number[])[])[]): number[][] {
  const numLayers = Math.max(0, ...countsByRank.map((c) => c.length));
  return Array.from({ length: numLayers }, (_, l) => {
    const out: number[] = [];
    for (const c of countsByRank) {
      (c[l] ?? []).forEach((n, e) => {
        out[e] = (out[e] ?? 0) + n;
      });
    }
    return out;
  });
}

/**
 * A layer's cost under `replicas`: the sum over slices of the slice's hottest per-replica load
 * (the barrier-time proxy), then, to break ties between equally hot experts, the sum of squared
 * per-replica loads. Compared lexicographically.
 */
function layerCost(
  slices: readonly (readonly number[])[],
  replicas: readonly number[],
): [number, number] {
  let cost = 0;
  let squares = 0;
  for (const s of slices) {
    let hottest = 0;
    s.forEach((n, e) => {
      const per = n / (replicas[e] as number);
      hottest = Math.max(hottest, per);
      squares += (replicas[e] as number) * per * per;
    });
    cost += hottest;
  }
  return [cost, squares];
}

function lower(a: [number, number], b: [number, number]): boolean {
  return a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);
}

/**
 * Replica counts per expert for one layer: start at 1 each; `budget` times, among the experts
 * hottest (per replica) in some slice, ties included, add the replica that lowers the layer cost
 * most (ties: lower expert id). An expert has at most `maxReplicas` copies.
 */
export function selectReplicas(
  slices: readonly (readonly number[])[],
  numExperts: number,
  budget: number,
  maxReplicas: number,
): number[] {
  const replicas = new Array<number>(numExperts).fill(1);
  for (let r = 0; r < budget; r++) {
    const hot = new Set<number>();
    for (const s of slices) {
      const per = s.map((n, e) => n / (replicas[e] as number));
      const top = Math.max(...per);
      if (top > 0) {
        per.forEach((p, e) => {
          if (p === top) hot.add(e);
        });
      }
    }
    let choice = -1;
    let choiceCost = layerCost(slices, replicas);
    for (const e of [...hot].sort((a, b) => a - b)) {
      if ((replicas[e] as number) >= maxReplicas) continue;
      replicas[e] = (replicas[e] as number) + 1;
      const c = layerCost(slices, replicas);
      replicas[e] = (replicas[e] as number) - 1;
      if (lower(c, choiceCost)) {
        choice = e;
        choiceCost = c;
      }
    }
    if (choice < 0) break; // no replica helps
    replicas[choice] = (replicas[choice] as number) + 1;
  }
  return replicas;
}

/**
 * Places one layer's redundant replicas. `primary[e]` is expert e's primary rank; each rank has
 * `slots` redundant slots. Replicas go longest-processing-time first (the expert's tokens over
 * its chosen replica count) to the least-loaded rank with a free slot that does not hold the
 * expert yet. Rank loads count each expert's tokens split evenly over the replicas placed so far;
 * a replica that would not lower the hottest of the expert's ranks is skipped (the expert keeps
 * fewer copies). Ranks in `down` (failed over) get none. Returns [expert] -> ranks, primary first.
 */
export function placeLayer(
  primary: readonly number[],
  replicas: readonly number[],
  load: readonly number[],
  numRanks: number,
  slots: number,
  down: readonly number[] = [],
): number[][] {
  const out = primary.map((r) => [r]);
  const rankLoad = new Array<number>(numRanks).fill(0);
  const free = Array.from({ length: numRanks }, (_, r) => (down.includes(r) ? 0 : slots));
  primary.forEach((r, e) => {
    rankLoad[r] = (rankLoad[r] as number) + (load[e] ?? 0);
  });
  const extra: { e: number; w: number }[] = [];
  replicas.forEach((n, e) => {
    for (let i = 1; i < n; i++) extra.push({ e, w: (load[e] ?? 0) / n });
  });
  extra.sort((a, b) => b.w - a.w || a.e - b.e);
  for (const { e } of extra) {
    const holders = out[e] as number[];
    const oldShare = (load[e] ?? 0) / holders.length;
    const newShare = (load[e] ?? 0) / (holders.length + 1);
    let best = -1;
    for (let r = 0; r < numRanks; r++) {
      if ((free[r] as number) === 0 || holders.includes(r)) continue;
      if (best < 0 || (rankLoad[r] as number) < (rankLoad[best] as number)) best = r;
    }
    if (best < 0) continue;
    const hottest = Math.max(...holders.map((h) => rankLoad[h] as number));
    const after = Math.max(
      (rankLoad[best] as number) + newShare,
      ...holders.map((h) => (rankLoad[h] as number) - oldShare + newShare),
    );
    if (after >= hottest) continue;
    for (const h of holders) rankLoad[h] = (rankLoad[h] as number) - oldShare + newShare;
    rankLoad[best] = (rankLoad[best] as number) + newShare;
    holders.push(best);
    free[best] = (free[best] as number) - 1;
  }
  return out;
}

/**
 * The next expert map from per-layer token counts in time slices ([layer][slice][expert]).
 * Primaries stay where they are; redundant replicas are chosen and placed afresh, never on a
 * failed-over rank (`map.down`, which the next map keeps).
 */
export function rebalance(
  map: ExpertMap,
  slices: readonly (readonly (readonly number[])[])[],
  opts: EplbOptions = DEFAULT_EPLB,
): ExpertMap {
  const numRanks = map.numRanks;
  const down = map.down ?? [];
  const numLive = numRanks - down.length;
  const replicas = map.replicas.map((layer, l) => {
    const numExperts = layer.length;
    const ls = slices[l] ?? [];
    const primary = layer.map((ranks) => ranks[0] as number);
    if (numLive < 2 || opts.redundantSlotsPerRank === 0) return primary.map((r) => [r]);
    const counts = selectReplicas(ls, numExperts, opts.redundantSlotsPerRank * numLive, numLive);
    const load = new Array<number>(numExperts).fill(0);
    for (const s of ls) {
      s.forEach((n, e) => {
        load[e] = (load[e] as number) + n;
      });
    }
    return placeLayer(primary, counts, load, numRanks, opts.redundantSlotsPerRank, down);
  });
  const next: ExpertMap = {
    version: map.version + 1,
    numRanks,
    replicas,
    ...(down.length > 0 ? { down: [...down] } : {}),
  };
  checkMap(next, map.replicas[0]?.length ?? 0);
  assert(
    next.replicas.every((layer, l) =>
      layer.every((ranks, e) => ranks[0] === map.replicas[l]?.[e]?.[0]),
    ),
    "a rebalance moved a primary expert",
  );
  return next;
}
