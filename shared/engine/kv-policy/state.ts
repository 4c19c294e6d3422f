/**
 * A sequence's KV-cache policy state and the policies' page decisions (which page to evict,
 * which timestamps to refresh). Plain data on the Sequence; pure.
 *
 * Layout: a sparse sequence's block table holds only its resident blocks, in position order.
 * Pages are `blocksPerPage` consecutive blocks; `pages[i]` is the page index (position /
 * pageSize) of the i-th resident page, whose blocks are table entries [i * m, (i + 1) * m). Only
 * whole, full pages are evicted and the current page is always the last, so every resident block
 * but the last is full, and a position p of the current page sits at key index
 * `p - evictedBlocks * blockSize`: the attention kernels read the compacted table unchanged.
 *
 * Scores (one per resident block, summed here per page) are aggregated over layers and heads,
 * because a block holds every layer and head: "bound" scores are, per (layer, query head), the
 * softmax over pages of Quest's bound sum_i max(q_i min_i, q_i max_i) / sqrt(d); "probs" are the
 * true attention probabilities summed per page. Both sum to layers x heads per step.
 *
 * Policies (`L` = budget pages, current page never evicted, ties evict the earliest page):
 * - streamingllm: keep ceil(sinks / pageSize) sink pages and the most recent pages.
 * - h2o: keep the ceil(recentShare * L) most recent pages; among the older ones evict the
 *   smallest accumulated attention ("probs" summed over steps). The prompt is not protected.
 * - raas: every step the top ceil(refreshShare * L) pages by bound (the current page left out)
 *   get timestamp = position; evict the oldest timestamp. Prompt pages pinned.
 * - raas-nopin: raas without the pins (the ablation).
 * - quest: evicts nothing; each layer attends to its top L - 1 pages by bound plus the current
 *   page (chosen inside the forward, `questPages`).
 */
import { assert } from "../../assert.ts";
import type { KvScoreMode } from "../../model/page-scorer.ts";
import { budgetPages, evicts, type KvCacheSpec, promptPages } from "./spec.ts";

export interface KvState {
  spec: KvCacheSpec;
  blocksPerPage: number;
  numPinnedPages: number;
  /** Page index of each resident page, ascending. */
  pages: number[];
  /** Per resident page: the raas timestamp (a position). */
  ts: number[];
  /** Per resident page: h2o's accumulated attention. */
  acc: number[];
  /** Blocks freed by eviction since the sequence's KV was last (re)built. */
  evictedBlocks: number;
  /** Pages evicted over the sequence's life. */
  evictions: number;
  /** Most blocks the sequence held at once. */
  peakBlocks: number;
}

export function newKvState(spec: KvCacheSpec, blockSize: number, numPromptTokens: number): KvState {
  assert(spec.pageSize % blockSize === 0, "page size is not a multiple of the block size");
  return {
    spec,
    blocksPerPage: spec.pageSize / blockSize,
    numPinnedPages: spec.policy === "raas" ? promptPages(spec, numPromptTokens) : 0,
    pages: [],
    ts: [],
    acc: [],
    evictedBlocks: 0,
    evictions: 0,
    peakBlocks: 0,
  };
}

export function scoreMode(spec: KvCacheSpec): KvScoreMode {
  if (spec.policy === "raas" || spec.policy === "raas-nopin") return "bound";
  if (spec.policy === "h2o") return "probs";
  return "none";
}

/** Quest's pages attended per layer (the rest of the budget after the current page); 0: all. */
export function questPages(spec: KvCacheSpec): number {
  return spec.policy === "quest" ? budgetPages(spec) - 1 : 0;
}

/** Forgets the resident pages (the sequence's blocks were all freed: preemption). */
export function resetKvPages(st: KvState): void {
  st.pages.length = 0;
  st.ts.length = 0;
  st.acc.length = 0;
  st.evictedBlocks = 0;
}

/** Registers the pages that hold positions [0, numTokens) and are not yet known. */
export function openPages(st: KvState, numTokens: number): void {
  const last = Math.floor((numTokens - 1) / st.spec.pageSize);
  let next = st.pages.length === 0 ? 0 : (st.pages[st.pages.length - 1] as number) + 1;
  for (; next <= last; next++) {
    st.pages.push(next);
    st.ts.push(next * st.spec.pageSize);
    st.acc.push(0);
  }
}

/** Index (into `pages`) of the page to evict, or -1 when none may go. */
export function victim(st: KvState): number {
  const n = st.pages.length;
  const spec = st.spec;
  const L = budgetPages(spec);
  let best = -1;
  switch (spec.policy) {
    case "streamingllm": {
      const sinkPages = Math.ceil(spec.sinks / spec.pageSize);
      for (let i = 0; i < n - 1; i++) if ((st.pages[i] as number) >= sinkPages) return i;
      return -1;
    }
    case "h2o": {
      const recent = Math.max(1, Math.ceil(spec.recentShare * L));
      for (let i = 0; i < n - recent; i++) {
        if (best < 0 || (st.acc[i] as number) < (st.acc[best] as number)) best = i;
      }
      return best;
    }
    case "raas":
    case "raas-nopin": {
      for (let i = 0; i < n - 1; i++) {
        if ((st.pages[i] as number) < st.numPinnedPages) continue;
        if (best < 0 || (st.ts[i] as number) < (st.ts[best] as number)) best = i;
      }
      return best;
    }
    default:
      return -1;
  }
}

/**
 * Evicts pages while more than the budget are resident, freeing their blocks through `free`
 * (which releases by reference: a block shared with another sequence stays with it).
 */
export function evictOverBudget(
  st: KvState,
  table: number[],
  free: (blocks: number[]) => void,
): void {
  if (!evicts(st.spec.policy)) return;
  const L = budgetPages(st.spec);
  const m = st.blocksPerPage;
  while (st.pages.length > L) {
    const i = victim(st);
    if (i < 0) return;
    assert(table.length >= (i + 1) * m, "evicting a page whose blocks are not all resident");
    free(table.splice(i * m, m));
    st.pages.splice(i, 1);
    st.ts.splice(i, 1);
    st.acc.splice(i, 1);
    st.evictedBlocks += m;
    st.evictions++;
  }
}

/**
 * Applies one decode step's per-block scores (aligned with the block table the step read):
 * raas refreshes timestamps of its top pages to `position`, h2o accumulates.
 */
export function applyScores(st: KvState, blockScores: ArrayLike<number>, position: number): void {
  const m = st.blocksPerPage;
  const n = st.pages.length;
  const pageScore = new Array<number>(n).fill(0);
  for (let j = 0; j < blockScores.length; j++) {
    const i = Math.floor(j / m);
    if (i < n) pageScore[i] = (pageScore[i] as number) + (blockScores[j] as number);
  }
  if (st.spec.policy === "h2o") {
    for (let i = 0; i < n; i++) st.acc[i] = (st.acc[i] as number) + (pageScore[i] as number);
    return;
  }
  if (st.spec.policy !== "raas" && st.spec.policy !== "raas-nopin") return;
  const k = Math.ceil(st.spec.refreshShare * budgetPages(st.spec));
  // the current (last) page is always resident: refresh the top k of the others
  const order = Array.from({ length: n - 1 }, (_, i) => i).sort(
    (a, b) => (pageScore[b] as number) - (pageScore[a] as number) || a - b,
  );
  for (let r = 0; r < Math.min(k, order.length); r++) st.ts[order[r] as number] = position;
}
