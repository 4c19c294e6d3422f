/**
 * Page scores of a sparse KV-cache policy, computed inside the forward for a decode row just
 * before its attention (RaaS and Quest read the query of the step they act on). Pure maths in
 * plain arrays (not kernel memory): the min/max-key metadata is 2 / blockSize of the K cache.
 *
 * - "bound": per resident block, per layer and query head, Quest's upper bound on q.k,
 *   sum_i max(q_i min_i, q_i max_i) / sqrt(d), with min/max the channel-wise extremes of the
 *   block's keys; softmax over the blocks; combined over heads and layers into `out`.
 * - "probs": the true attention probabilities (softmax of q.k / sqrt(d) over resident keys, as
 *   the kernel computes them) summed per block, combined over heads and layers (H2O's statistic).
 * - selection (Quest): per layer, the blocks' bound softmax combined over heads picks the top
 *   `selectPages` pages, the current page left out; the layer attends to them plus the current
 *   page, in position order.
 * - combined: summed (`aggregate` "sum") or the maximum ("max") over (layer, head).
 *
 * The metadata is folded lazily: `metaRows[layer][block]` counts the block's rows folded so far,
 * and a write at a block's first row resets it (the block was reused).
 */

export type KvScoreMode = "none" | "bound" | "probs";

/**
 * How a block's scores from every (layer, query head) combine into one: `sum` (the default) or
 * `max` (a block one head needs counts as much as a block every head reads a little).
 */
export const KV_SCORE_AGGREGATES = ["sum", "max"] as const;
export type KvScoreAggregate = (typeof KV_SCORE_AGGREGATES)[number];

/** A sparse decode row's request to the forward. */
export interface KvRowPlan {
  mode: KvScoreMode;
  /** Quest: pages to attend besides the current one (0: attend to every resident block). */
  selectPages: number;
  blocksPerPage: number;
  aggregate: KvScoreAggregate;
  /** Per resident block, accumulated over layers (mode "none": null). */
  out: Float32Array | null;
}

export class PageScorer {
  private readonly kMin: Float32Array[] = [];
  private readonly kMax: Float32Array[] = [];
  private readonly metaRows: Int32Array[] = [];
  private blockScores = new Float32Array(64);
  private keyScores = new Float32Array(256);

  constructor(
    numLayers: number,
    private readonly numBlocks: number,
    private readonly blockSize: number,
    private readonly kvDim: number,
  ) {
    for (let l = 0; l < numLayers; l++) {
      this.kMin.push(new Float32Array(numBlocks * kvDim));
      this.kMax.push(new Float32Array(numBlocks * kvDim));
      this.metaRows.push(new Int32Array(numBlocks));
    }
  }

  /** Bytes of metadata. */
  get bytes(): number {
    return this.kMin.length * this.numBlocks * (2 * this.kvDim + 1) * 4;
  }

  /** Marks `block`'s metadata of `layer` stale (its first row is being rewritten). */
  invalidate(layer: number, block: number): void {
    (this.metaRows[layer] as Int32Array)[block] = 0;
  }

  /** Folds rows [metaRows, rows) of `block` of `layer` into its min/max. */
  private fold(layer: number, kCache: Float32Array, block: number, rows: number): void {
    const meta = this.metaRows[layer] as Int32Array;
    let r = meta[block] as number;
    if (r >= rows) return;
    const d = this.kvDim;
    const mn = this.kMin[layer] as Float32Array;
    const mx = this.kMax[layer] as Float32Array;
    const o = block * d;
    for (; r < rows; r++) {
      const k = (block * this.blockSize + r) * d;
      for (let i = 0; i < d; i++) {
        const v = kCache[k + i] as number;
        if (r === 0 || v < (mn[o + i] as number)) mn[o + i] = v;
        if (r === 0 || v > (mx[o + i] as number)) mx[o + i] = v;
      }
    }
    meta[block] = rows;
  }

  /**
   * Scores the `numKeys` resident keys of `table` for query `q` at `layer` (after the row's own
   * K was written). Adds to `plan.out`; with `plan.selectPages > 0` fills `selTable` with the
   * attended blocks and returns their key count, else returns -1 (attend to all).
   */
  score(
    layer: number,
    plan: KvRowPlan,
    q: Float32Array,
    kCache: Float32Array,
    table: Int32Array,
    numKeys: number,
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    selTable: Int32Array,
  ): number {
    const bs = this.blockSize;
    const nb = Math.ceil(numKeys / bs);
    const lastRows = numKeys - (nb - 1) * bs;
    const group = numHeads / numKvHeads;
    const scale = 1 / Math.sqrt(headDim);
    if (plan.mode === "probs") {
      if (this.keyScores.length < numKeys) this.keyScores = new Float32Array(2 * numKeys);
      const s = this.keyScores;
      const out = plan.out as Float32Array;
      const head = new Float64Array(nb);
      for (let h = 0; h < numHeads; h++) {
        const qo = h * headDim;
        const ko = Math.floor(h / group) * headDim;
        let max = Number.NEGATIVE_INFINITY;
        for (let t = 0; t < numKeys; t++) {
          const row = ((table[Math.floor(t / bs)] as number) * bs + (t % bs)) * this.kvDim + ko;
          let dot = 0;
          for (let i = 0; i < headDim; i++)
            dot += (q[qo + i] as number) * (kCache[row + i] as number);
          s[t] = dot * scale;
          if ((s[t] as number) > max) max = s[t] as number;
        }
        let sum = 0;
        for (let t = 0; t < numKeys; t++) {
          s[t] = Math.exp((s[t] as number) - max);
          sum += s[t] as number;
        }
        head.fill(0);
        for (let t = 0; t < numKeys; t++) {
          const j = Math.floor(t / bs);
          head[j] = (head[j] as number) + (s[t] as number) / sum;
        }
        for (let j = 0; j < nb; j++) out[j] = combine(plan.aggregate, out[j], head[j]);
      }
      return -1;
    }
    if (plan.mode === "none" && plan.selectPages === 0) return -1;
    for (let j = 0; j < nb; j++)
      this.fold(layer, kCache, table[j] as number, j === nb - 1 ? lastRows : bs);
    if (this.blockScores.length < nb) this.blockScores = new Float32Array(2 * nb);
    const acc = this.blockScores;
    acc.fill(0, 0, nb);
    const mn = this.kMin[layer] as Float32Array;
    const mx = this.kMax[layer] as Float32Array;
    const b = new Float64Array(nb);
    for (let h = 0; h < numHeads; h++) {
      const qo = h * headDim;
      const ko = Math.floor(h / group) * headDim;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < nb; j++) {
        const o = (table[j] as number) * this.kvDim + ko;
        let bound = 0;
        for (let i = 0; i < headDim; i++) {
          const qi = q[qo + i] as number;
          bound += Math.max(qi * (mn[o + i] as number), qi * (mx[o + i] as number));
        }
        b[j] = bound * scale;
        if ((b[j] as number) > max) max = b[j] as number;
      }
      let sum = 0;
      for (let j = 0; j < nb; j++) {
        b[j] = Math.exp((b[j] as number) - max);
        sum += b[j] as number;
      }
      for (let j = 0; j < nb; j++) acc[j] = combine(plan.aggregate, acc[j], (b[j] as number) / sum);
    }
    if (plan.out)
      for (let j = 0; j < nb; j++) plan.out[j] = combine(plan.aggregate, plan.out[j], acc[j]);
    return plan.selectPages > 0 ? this.select(plan, table, nb, lastRows, selTable) : -1;
  }

  /** Quest: the top `selectPages` pages by summed bound (current page excluded) plus the current page. */
  private select(
    plan: KvRowPlan,
    table: Int32Array,
    nb: number,
    lastRows: number,
    selTable: Int32Array,
  ): number {
    const m = plan.blocksPerPage;
    const nPages = Math.ceil(nb / m);
    if (nPages - 1 <= plan.selectPages) return -1;
    const pageScore = new Float64Array(nPages - 1);
    for (let j = 0; j < (nPages - 1) * m; j++) {
      const p = Math.floor(j / m);
      pageScore[p] = (pageScore[p] as number) + (this.blockScores[j] as number);
    }
    const order = Array.from({ length: nPages - 1 }, (_, p) => p)
      .sort((x, y) => (pageScore[y] as number) - (pageScore[x] as number) || x - y)
      .slice(0, plan.selectPages)
      .sort((x, y) => x - y);
    let n = 0;
    for (const p of order)
      for (let j = p * m; j < (p + 1) * m; j++) selTable[n++] = table[j] as number;
    for (let j = (nPages - 1) * m; j < nb; j++) selTable[n++] = table[j] as number;
    return (n - 1) * this.blockSize + lastRows;
  }
}

/** One more (layer, head) score folded into a block's running score. */
function combine(how: KvScoreAggregate, acc: number | undefined, x: number | undefined): number {
  return how === "max" ? Math.max(acc as number, x as number) : (acc as number) + (x as number);
}
