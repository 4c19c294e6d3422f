/**
 * The transformer forward pass over a batch of token rows from many sequences, with a paged KV
 * cache. Handles llama (dense and Mixtral-style MoE) and qwen3moe. Pure; no I/O; all buffers are
 * allocated once in kernel memory at construction and reused by every step.
 *
 * Determinism: every row is computed on its own (kernels reduce in a fixed per-element order, the
 * MoE combines expert outputs in top-k slot order), so a row's logits do not depend on the batch
 * it shares or on how its sequence's prefill was chunked.
 */
import { assert } from "../assert.ts";
import type { ModelConfig } from "./config.ts";
import type { Kernels } from "./kernels.ts";
import { applyLinear } from "./linear.ts";
import { routeTopK } from "./moe.ts";
import { type ExpertWorkspace, type MoeExecutor, runExperts } from "./moe-split.ts";
import { type RopeTable, rmsnorm, rope, ropeTable } from "./ops.ts";
import { type KvRowPlan, PageScorer } from "./page-scorer.ts";
import { maxActRowBytes } from "./quant.ts";
import { type Linear, type Matrix, type ModelWeights, matrixRows, readRow } from "./weights.ts";

export interface ForwardShape {
  /** Most token rows in one forward (the scheduler's token budget). */
  maxNumTokens: number;
  /** Most sequences in one forward. */
  maxNumSeqs: number;
  /** Longest sequence (prompt + output). */
  maxModelLen: number;
  blockSize: number;
  numBlocks: number;
}

/** One forward's input. Rows of one sequence are consecutive and in position order. */
export interface ForwardBatch {
  numTokens: number;
  tokenIds: ArrayLike<number>; // (numTokens)
  positions: ArrayLike<number>; // (numTokens)
  /** Row -> index into blockTables. */
  seqIndex: ArrayLike<number>; // (numTokens)
  blockTables: readonly (readonly number[])[];
  /** Rows whose logits are returned, in this order. */
  logitRows: readonly number[];
  /**
   * Per sequence, tokens evicted from its KV (a whole number of blocks; absent: 0). Its block
   * table then holds only resident blocks: position p is key p - keyShift (RoPE still uses p).
   */
  keyShifts?: ArrayLike<number>;
  /** Per sequence, a sparse decode row's scoring and selection (page-scorer.ts); null: none. */
  kvPlans?: readonly (KvRowPlan | null)[];
}

/** f32 bytes of KV cache per block (all layers, K and V). */
export function kvBytesPerBlock(c: ModelConfig, blockSize: number): number {
  return c.numHiddenLayers * 2 * blockSize * c.numKeyValueHeads * c.headDim * 4;
}

/** f32 bytes the activation workspace of `Transformer` takes for a shape (without the KV cache). */
export function workspaceBytes(c: ModelConfig, s: Omit<ForwardShape, "numBlocks">): number {
  const t = s.maxNumTokens;
  const qDim = c.numAttentionHeads * c.headDim;
  const kvDim = c.numKeyValueHeads * c.headDim;
  const ff = Math.max(c.intermediateSize, c.moeIntermediateSize);
  const k = Math.max(c.numExpertsPerTok, 1);
  const floats =
    3 * t * c.hiddenSize +
    t * (qDim + 2 * kvDim) +
    t * qDim +
    t * 3 * ff +
    t * c.numExperts +
    t * k * c.hiddenSize * 2 +
    t * c.hiddenSize +
    s.maxNumSeqs * c.vocabSize +
    s.maxModelLen +
    2 * t * k;
  const mb = Math.ceil(s.maxModelLen / s.blockSize);
  const ints = s.maxNumSeqs * mb + mb + 3 * t * k + 2 * c.numExperts;
  const scratch = Math.max(t, s.maxNumSeqs) * maxActRowBytes(Math.max(c.hiddenSize, qDim, ff));
  return 4 * (floats + ints) + scratch + 16 * 26;
}

export class Transformer {
  /** Per-layer K and V caches: (numBlocks * blockSize, kvDim). Exposed for KV transfer. */
  readonly kCache: Float32Array[] = [];
  readonly vCache: Float32Array[] = [];
  private readonly rope: RopeTable;
  // workspace (see workspaceBytes)
  private readonly x: Float32Array;
  private readonly xb: Float32Array;
  private readonly xb2: Float32Array;
  private readonly qkv: Float32Array;
  private readonly att: Float32Array;
  private readonly hb: Float32Array;
  private readonly hb2: Float32Array;
  private readonly routerLogits: Float32Array;
  private readonly slotOut: Float32Array;
  private readonly gathered: Float32Array;
  private readonly expertOut: Float32Array;
  private readonly logits: Float32Array;
  private readonly scores: Float32Array;
  private readonly routeIds: Int32Array;
  private readonly routeWeights: Float32Array;
  private readonly blockTables: Int32Array;
  /** The local expert half's scratch, made of the buffers above. */
  private readonly expertWs: ExpertWorkspace;
  private readonly pairRow: Int32Array; // (row * topK + slot) -> row
  /** Quantised activation rows for matmulQ. */
  private readonly actScratch: Uint8Array;
  private readonly maxBlocksPerSeq: number;
  /** Blocks a sparse row attends to (Quest's selection), and the scorer, made on first use. */
  private readonly selTable: Int32Array;
  private scorer: PageScorer | null = null;
  /** Per-row and per-sequence views, made once so the hot loop allocates nothing. */
  private readonly attRows: Float32Array[];
  private readonly qRows: Float32Array[];
  private readonly tableRows: Int32Array[];

  constructor(
    readonly config: ModelConfig,
    private readonly weights: ModelWeights,
    private readonly kernels: Kernels,
    readonly shape: ForwardShape,
    /** Shares this one's KV cache instead of allocating one (twin()). */
    kvOf?: Transformer,
  ) {
    const c = config;
    const t = shape.maxNumTokens;
    const qDim = c.numAttentionHeads * c.headDim;
    const kvDim = c.numKeyValueHeads * c.headDim;
    const ff = Math.max(c.intermediateSize, c.moeIntermediateSize);
    const k = Math.max(c.numExpertsPerTok, 1);
    const kv = kernels;
    this.rope = ropeTable(shape.maxModelLen, c.ropeDim, c.ropeTheta);
    this.maxBlocksPerSeq = Math.ceil(shape.maxModelLen / shape.blockSize);
    this.x = kv.alloc(t * c.hiddenSize);
    this.xb = kv.alloc(t * c.hiddenSize);
    this.xb2 = kv.alloc(t * c.hiddenSize);
    this.qkv = kv.alloc(t * (qDim + 2 * kvDim));
    this.att = kv.alloc(t * qDim);
    this.hb = kv.alloc(t * 2 * ff);
    this.hb2 = kv.alloc(t * ff);
    this.routerLogits = kv.alloc(t * c.numExperts);
    this.slotOut = kv.alloc(t * k * c.hiddenSize);
    this.gathered = kv.alloc(t * c.hiddenSize);
    this.expertOut = kv.alloc(t * k * c.hiddenSize);
    this.logits = kv.alloc(shape.maxNumSeqs * c.vocabSize);
    this.scores = kv.alloc(shape.maxModelLen);
    this.routeIds = kv.allocInt32(t * k);
    this.routeWeights = kv.alloc(t * k);
    this.blockTables = kv.allocInt32(shape.maxNumSeqs * this.maxBlocksPerSeq);
    this.selTable = kv.allocInt32(this.maxBlocksPerSeq);
    this.actScratch = kv.allocBytes(
      Math.max(t, shape.maxNumSeqs) * maxActRowBytes(Math.max(c.hiddenSize, qDim, ff)),
    );
    this.expertWs = {
      gathered: this.gathered,
      hb: this.hb,
      hb2: this.hb2,
      expertOut: this.expertOut,
      order: kv.allocInt32(t * k + c.numExperts),
      counts: kv.allocInt32(c.numExperts),
      act: this.actScratch,
    };
    this.pairRow = kv.allocInt32(t * k);
    for (let i = 0; i < t * k; i++) this.pairRow[i] = Math.floor(i / k);
    const qkvDim = qDim + 2 * kvDim;
    this.attRows = Array.from({ length: t }, (_, r) => this.att.subarray(r * qDim, (r + 1) * qDim));
    this.qRows = Array.from({ length: t }, (_, r) =>
      this.qkv.subarray(r * qkvDim, r * qkvDim + qDim),
    );
    const mb = this.maxBlocksPerSeq;
    this.tableRows = Array.from({ length: shape.maxNumSeqs }, (_, i) =>
      this.blockTables.subarray(i * mb, (i + 1) * mb),
    );
    for (let l = 0; l < c.numHiddenLayers; l++) {
      this.kCache.push(kvOf?.kCache[l] ?? kv.alloc(shape.numBlocks * shape.blockSize * kvDim));
      this.vCache.push(kvOf?.vCache[l] ?? kv.alloc(shape.numBlocks * shape.blockSize * kvDim));
    }
  }

  /**
   * A second set of activation buffers over the same weights and KV cache (ping-pong micro-batches,
   * shared/moe/ping-pong.ts): forwards may interleave on the two if their sequences differ.
   * Dense KV only (a sparse policy's page scorer is per workspace).
   */
  twin(): Transformer {
    return new Transformer(this.config, this.weights, this.kernels, this.shape, this);
  }

  /** f32 values of K and V for `numTokens` tokens, all layers (the KV handed from prefill to decode). */
  kvSize(numTokens: number): number {
    const kvDim = this.config.numKeyValueHeads * this.config.headDim;
    return this.config.numHiddenLayers * 2 * numTokens * kvDim;
  }

  /**
   * Copies the K/V of positions [0, numTokens) of a sequence out of the paged cache into `out`
   * (kvSize(numTokens)), laid out [layer][K then V][position][kvDim]: contiguous, independent of
   * which blocks held it.
   */
  exportKv(blockTable: readonly number[], numTokens: number, out: Float32Array): void {
    this.copyKv(blockTable, numTokens, out, true);
  }

  /** The inverse of exportKv: writes positions [0, numTokens) into the sequence's blocks. */
  importKv(blockTable: readonly number[], numTokens: number, data: Float32Array): void {
    this.copyKv(blockTable, numTokens, data, false);
  }

  private copyKv(
    table: readonly number[],
    numTokens: number,
    buf: Float32Array,
    out: boolean,
  ): void {
    const c = this.config;
    const kvDim = c.numKeyValueHeads * c.headDim;
    const bs = this.shape.blockSize;
    assert(buf.length === this.kvSize(numTokens), "KV buffer has the wrong size");
    assert(table.length * bs >= numTokens, "block table too short for the KV");
    if (!out && this.scorer) {
      for (let l = 0; l < c.numHiddenLayers; l++)
        for (const id of table) this.scorer.invalidate(l, id);
    }
    let o = 0;
    for (let l = 0; l < c.numHiddenLayers; l++) {
      for (const cache of [this.kCache[l] as Float32Array, this.vCache[l] as Float32Array]) {
        for (let p = 0; p < numTokens; p++) {
          const row = ((table[Math.floor(p / bs)] as number) * bs + (p % bs)) * kvDim;
          if (out) buf.set(cache.subarray(row, row + kvDim), o);
          else cache.set(buf.subarray(o, o + kvDim), row);
          o += kvDim;
        }
      }
    }
  }

  /**
   * Runs the batch; returns logits (logitRows.length, vocabSize), a view valid until the next call.
   * K/V of every row are written to the cache slots of its block table before attention reads
   * them, so rows of one sequence in the same batch see each other causally. MoE layers run
   * their experts here (the weights must be loaded).
   */
  forward(b: ForwardBatch): Float32Array {
    const T = this.embed(b);
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      if (this.attentionHalf(l, b)) this.localExperts(l, T);
      else this.denseFfn(l, T);
      this.finishLayer(l, T);
    }
    return this.classify(b);
  }

  /**
   * The same forward with each MoE layer's expert half handed to `moe` (which may run it on
   * other ranks); dense layers and everything else run here. Bit-identical to `forward`.
   */
  async forwardWith(b: ForwardBatch, moe: MoeExecutor): Promise<Float32Array> {
    const T = this.embed(b);
    const k = this.config.numExpertsPerTok;
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      if (this.attentionHalf(l, b)) {
        await moe.experts(
          { layer: l, numTokens: T, hidden: this.xb, routeIds: this.routeIds.subarray(0, T * k) },
          this.slotOut,
        );
      } else this.denseFfn(l, T);
      this.finishLayer(l, T);
    }
    return this.classify(b);
  }

  /** Checks the batch, loads its block tables and embeds its tokens into x; returns T. */
  private embed(b: ForwardBatch): number {
    const c = this.config;
    const s = this.shape;
    const T = b.numTokens;
    const h = c.hiddenSize;
    assert(T > 0 && T <= s.maxNumTokens, `batch of ${T} tokens exceeds ${s.maxNumTokens}`);
    assert(b.blockTables.length <= s.maxNumSeqs, "too many sequences in batch");
    assert(b.logitRows.length <= s.maxNumSeqs, "too many logit rows");
    const mb = this.maxBlocksPerSeq;
    b.blockTables.forEach((table, i) => {
      assert(table.length <= mb, "block table longer than maxModelLen");
      for (let j = 0; j < table.length; j++) this.blockTables[i * mb + j] = table[j] as number;
    });
    for (let r = 0; r < T; r++) {
      const tok = b.tokenIds[r] as number;
      assert(tok >= 0 && tok < c.vocabSize, `token id ${tok} out of range`);
      const pos = b.positions[r] as number;
      assert(pos >= 0 && pos < s.maxModelLen, `position ${pos} out of range`);
      readRow(this.weights.tokenEmbd, tok, this.x, r * h);
    }
    return T;
  }

  /**
   * Layer l up to the FFN: attention and its residual into x, the FFN norm into xb, and for a
   * MoE layer the router's top-k into routeIds/routeWeights. Returns whether the layer is MoE.
   */
  private attentionHalf(l: number, b: ForwardBatch): boolean {
    const c = this.config;
    const T = b.numTokens;
    const h = c.hiddenSize;
    const kvDim = c.numKeyValueHeads * c.headDim;
    const qDim = c.numAttentionHeads * c.headDim;
    const qkvDim = qDim + 2 * kvDim;
    const bs = this.shape.blockSize;
    const mb = this.maxBlocksPerSeq;
    const neox = c.ropeStyle === "neox";
    const K = this.kernels;
    if (b.kvPlans?.some((p) => p !== null)) {
      this.scorer ??= new PageScorer(c.numHiddenLayers, this.shape.numBlocks, bs, kvDim);
    }
    const scorer = this.scorer;
    const w = this.weights.layers[l];
    assert(w !== undefined, "missing layer");
    const kc = this.kCache[l] as Float32Array;
    const vc = this.vCache[l] as Float32Array;
    for (let r = 0; r < T; r++) rmsnorm(this.xb, r * h, this.x, r * h, w.attnNorm, h, c.rmsNormEps);
    this.linear(this.qkv, this.xb, w.wqkv, T, h);
    for (let r = 0; r < T; r++) {
      const o = r * qkvDim;
      const pos = b.positions[r] as number;
      if (w.qNorm && w.kNorm) {
        for (let hd = 0; hd < c.numAttentionHeads; hd++) {
          const p = o + hd * c.headDim;
          rmsnorm(this.qkv, p, this.qkv, p, w.qNorm, c.headDim, c.rmsNormEps);
        }
        for (let hd = 0; hd < c.numKeyValueHeads; hd++) {
          const p = o + qDim + hd * c.headDim;
          rmsnorm(this.qkv, p, this.qkv, p, w.kNorm, c.headDim, c.rmsNormEps);
        }
      }
      rope(this.qkv, o, c.numAttentionHeads, c.headDim, pos, this.rope, neox);
      rope(this.qkv, o + qDim, c.numKeyValueHeads, c.headDim, pos, this.rope, neox);
      const seq = b.seqIndex[r] as number;
      const kpos = pos - ((b.keyShifts?.[seq] as number | undefined) ?? 0);
      const block = this.blockTables[seq * mb + Math.floor(kpos / bs)] as number;
      if (scorer && kpos % bs === 0) scorer.invalidate(l, block);
      const slot = (block * bs + (kpos % bs)) * kvDim;
      for (let i = 0; i < kvDim; i++) {
        kc[slot + i] = this.qkv[o + qDim + i] as number;
        vc[slot + i] = this.qkv[o + qDim + kvDim + i] as number;
      }
    }
    for (let r = 0; r < T; r++) {
      const seq = b.seqIndex[r] as number;
      let table = this.tableRows[seq] as Int32Array;
      let numKeys =
        (b.positions[r] as number) + 1 - ((b.keyShifts?.[seq] as number | undefined) ?? 0);
      const plan = b.kvPlans?.[seq];
      if (plan && scorer) {
        const n = scorer.score(
          l,
          plan,
          this.qRows[r] as Float32Array,
          kc,
          table,
          numKeys,
          c.numAttentionHeads,
          c.numKeyValueHeads,
          c.headDim,
          this.selTable,
        );
        if (n > 0) {
          table = this.selTable;
          numKeys = n;
        }
      }
      K.attention(
        this.attRows[r] as Float32Array,
        this.qRows[r] as Float32Array,
        kc,
        vc,
        table,
        numKeys,
        c.numAttentionHeads,
        c.numKeyValueHeads,
        c.headDim,
        bs,
        this.scores,
      );
    }
    this.linear(this.xb2, this.att, w.wo, T, qDim);
    addInPlace(this.x, this.xb2, T * h);
    for (let r = 0; r < T; r++) rmsnorm(this.xb, r * h, this.x, r * h, w.ffnNorm, h, c.rmsNormEps);
    if (!w.wRouter) return false;
    const E = c.numExperts;
    const k = c.numExpertsPerTok;
    this.linear(this.routerLogits, this.xb, w.wRouter, T, h);
    for (let r = 0; r < T; r++) {
      routeTopK(this.routerLogits, r * E, E, k, this.routeIds, this.routeWeights, r * k);
    }
    return true;
  }

  /** Dense FFN of xb into xb2. */
  private denseFfn(l: number, T: number): void {
    const w = this.weights.layers[l];
    assert(w !== undefined, "missing layer");
    const h = this.config.hiddenSize;
    const ff = this.config.intermediateSize;
    this.linear(this.hb, this.xb, w.wGateUp, T, h);
    this.kernels.swiglu(this.hb2, this.hb, T, ff);
    this.linear(this.xb2, this.hb2, w.wDown, T, ff);
  }

  /** The expert half in-process: every (row, slot) pair's expert output into slotOut. */
  private localExperts(l: number, T: number): void {
    const c = this.config;
    const w = this.weights.layers[l];
    assert(w !== undefined && w.wGateUp.rows > 0, `layer ${l} holds no expert weights here`);
    const h = c.hiddenSize;
    const ff = c.moeIntermediateSize;
    const k = c.numExpertsPerTok;
    const weightsOf = (e: number) => ({
      gateUp: matrixRows(w.wGateUp, e * 2 * ff, 2 * ff),
      down: matrixRows(w.wDown, e * h, h),
    });
    runExperts(
      this.kernels,
      this.expertWs,
      c,
      this.xb,
      this.pairRow,
      this.routeIds,
      T * k,
      weightsOf,
      this.slotOut,
    );
  }

  /** Ends layer l: for MoE, combines slotOut into xb2 in top-k slot order; adds xb2 to x. */
  private finishLayer(l: number, T: number): void {
    const c = this.config;
    const h = c.hiddenSize;
    if (this.weights.layers[l]?.wRouter) {
      const k = c.numExpertsPerTok;
      // out = sum_s w_s * e_s, in slot order
      for (let r = 0; r < T; r++) {
        for (let i = 0; i < h; i++) {
          let v = 0;
          for (let s = 0; s < k; s++) {
            v += Math.fround(
              (this.routeWeights[r * k + s] as number) *
                (this.slotOut[(r * k + s) * h + i] as number),
            );
          }
          this.xb2[r * h + i] = v;
        }
      }
    }
    addInPlace(this.x, this.xb2, T * h);
  }

  /** Final norm and classifier, only for the rows that sample. */
  private classify(b: ForwardBatch): Float32Array {
    const c = this.config;
    const h = c.hiddenSize;
    const n = b.logitRows.length;
    for (let i = 0; i < n; i++) {
      const r = b.logitRows[i] as number;
      rmsnorm(this.xb, i * h, this.x, r * h, this.weights.outputNorm, h, c.rmsNormEps);
    }
    const out = this.logits.subarray(0, n * c.vocabSize);
    if (n > 0) this.linear(out, this.xb, this.weights.output, n, h);
    return out;
  }

  /** out (m, rows of W) = x (m, n) @ W^T, whatever W's types (linear.ts). */
  private linear(
    out: Float32Array,
    x: Float32Array,
    W: Linear | Matrix,
    m: number,
    n: number,
  ): void {
    applyLinear(this.kernels, out, x, W, m, n, this.actScratch);
  }
}

function addInPlace(x: Float32Array, y: Float32Array, n: number): void {
  for (let i = 0; i < n; i++) x[i] = (x[i] as number) + (y[i] as number);
}
