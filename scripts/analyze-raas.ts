/**
 * The RaaS premise on the lemma model (`npm run -s analyze:raas`): dense greedy decoding of
 * held-out lemma-chain problems with every decode step's attention recorded per (layer, head),
 * each key column classified as the RaaS digest's §8.3 defines (threshold `tau`):
 * - milestone: a decode token attended >= tau within `delta` rows after it, then < tau in every
 *   later row;
 * - phoenix: its longest run of rows < tau that ends in a row >= tau is longer than `gap` rows
 *   (split prefill / decode);
 * - lazy: all its attention >= tau lies within 4 rows of it, or it is a sink (position < 4).
 * Each head gets its majority column type. Heatmaps of three heads (the most milestone-,
 * phoenix- and lazy-dominated) of the first problem are written as PNGs (rows: decode steps,
 * columns: key positions; white = 0, black = the row's largest weight, square-root scale).
 *
 *   npm run -s analyze:raas -- [--model models/lemma-moe.gguf] [--problems 20] [--out docs] [--json]
 *
 * Attention is recorded by wrapping the js kernels' `attention` (one sequence, one token per
 * forward after the prompt, so call i of a forward is layer i) and recomputing each head's
 * softmax(q.k / sqrt(d)) over the keys the kernel reads. JSON on the last line.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { deflateSync } from "node:zlib";
import { createInstance } from "../shared/engine/instance.ts";
import { checkLemma, lemmaProblem, trainingIds } from "../shared/eval/lemma-chain.ts";
import type { Kernels } from "../shared/model/kernels.ts";
import { createJsKernels } from "../shared/model/kernels-js.ts";
import { argmax } from "../shared/model/sampler.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "models/lemma-moe.gguf" },
    problems: { type: "string", default: "20" },
    out: { type: "string", default: "docs" },
    tau: { type: "string", default: "0.05" },
    gap: { type: "string", default: "32" },
    json: { type: "boolean", default: false },
  },
});
const TAU = Number(values.tau);
const GAP = Number(values.gap);

/** Per layer, per head: rows (decode steps) of attention over keys 0..pos. */
type Maps = Float32Array[][][];
let recording: { maps: Maps; call: number } | null = null;

function recordingKernels(inner: Kernels): Kernels {
  const attention: Kernels["attention"] = (
    out,
    q,
    k,
    v,
    table,
    numKeys,
    nH,
    nKV,
    hd,
    bs,
    scores,
  ) => {
    if (recording) {
      const layer = recording.call++;
      const group = nH / nKV;
      for (let h = 0; h < nH; h++) {
        const row = new Float32Array(numKeys);
        let max = Number.NEGATIVE_INFINITY;
        for (let t = 0; t < numKeys; t++) {
          const o =
            (((table[Math.floor(t / bs)] as number) * bs + (t % bs)) * nKV +
              Math.floor(h / group)) *
            hd;
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += (q[h * hd + i] as number) * (k[o + i] as number);
          row[t] = dot / Math.sqrt(hd);
          max = Math.max(max, row[t] as number);
        }
        let sum = 0;
        for (let t = 0; t < numKeys; t++) sum += row[t] = Math.exp((row[t] as number) - max);
        for (let t = 0; t < numKeys; t++) row[t] = (row[t] as number) / sum;
        ((recording.maps[layer] as Float32Array[][])[h] as Float32Array[]).push(row);
      }
    }
    inner.attention(out, q, k, v, table, numKeys, nH, nKV, hd, bs, scores);
  };
  return Object.assign(Object.create(inner) as Kernels, { attention });
}

const bytes = new Uint8Array(readFileSync(values.model as string));
const inst = createInstance(bytes, recordingKernels(createJsKernels(64 * 2 ** 20)), {
  maxModelLen: 512,
  maxNumSeqs: 1,
});
const t = inst.transformer;
const c = t.config;
const table = Array.from({ length: Math.ceil(512 / t.shape.blockSize) }, (_, i) => i);

/** Dense greedy decode of one problem, recording decode-step attention. */
function decode(promptIds: number[], maxNew: number): { maps: Maps; ids: number[] } {
  const maps: Maps = Array.from({ length: c.numHiddenLayers }, () =>
    Array.from({ length: c.numAttentionHeads }, () => []),
  );
  const ids: number[] = [];
  let feed = promptIds;
  let pos = 0;
  for (let i = 0; i < maxNew; i++) {
    recording = feed.length === 1 ? { maps, call: 0 } : null;
    const logits = t.forward({
      numTokens: feed.length,
      tokenIds: feed,
      positions: feed.map((_, j) => pos + j),
      seqIndex: feed.map(() => 0),
      blockTables: [table],
      logitRows: [feed.length - 1],
    });
    recording = null;
    pos += feed.length;
    const next = argmax(logits, 0, c.vocabSize);
    if (inst.tokenizer.isEog(next)) break;
    ids.push(next);
    feed = [next];
  }
  return { maps, ids };
}

type Kind = "milestone" | "phoenix-prefill" | "phoenix-decode" | "lazy" | "other";

/** Classifies key column j of one head's map (rows r = query position numPrompt + r). */
function classify(rows: Float32Array[], j: number, numPrompt: number, delta: number): Kind {
  const firstRow = Math.max(0, j - numPrompt); // the first decode row that sees key j
  const att = (r: number) => (rows[r] as Float32Array)[j] ?? 0;
  if (j < 4) return "lazy";
  let longest = 0;
  let run = 0;
  let lastHot = -1;
  let hotFar = false;
  for (let r = firstRow; r < rows.length; r++) {
    const hot = att(r) >= TAU;
    if (hot) {
      if (run > longest) longest = run;
      run = 0;
      lastHot = r;
      if (numPrompt + r - j > 4) hotFar = true;
    } else run++;
  }
  if (longest > GAP) return j < numPrompt ? "phoenix-prefill" : "phoenix-decode";
  if (!hotFar) return lastHot >= 0 ? "lazy" : "other";
  if (j >= numPrompt && lastHot >= 0 && lastHot - firstRow <= delta) return "milestone";
  return "other";
}

const KINDS: Kind[] = ["milestone", "phoenix-prefill", "phoenix-decode", "lazy", "other"];
const counts = Array.from(
  { length: c.numHiddenLayers * c.numAttentionHeads },
  () => Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>,
);
let exact = 0;
let first: { maps: Maps; numPrompt: number } | null = null;
const n = Number(values.problems);
for (let i = 0; i < n; i++) {
  const p = lemmaProblem(3, i);
  const tr = trainingIds(p);
  const prompt = tr.ids.slice(0, tr.numPrompt);
  const { maps, ids } = decode(prompt, tr.ids.length - tr.numPrompt + 8);
  if (checkLemma(p, inst.tokenizer.decode(ids)).exact) exact++;
  first ??= { maps, numPrompt: prompt.length };
  const delta = 2 * p.lifetime * 9;
  for (let l = 0; l < maps.length; l++) {
    const layerMaps = maps[l] as Float32Array[][];
    for (let h = 0; h < layerMaps.length; h++) {
      const rows = layerMaps[h] as Float32Array[];
      const total = prompt.length + rows.length;
      const tally = counts[l * c.numAttentionHeads + h] as Record<Kind, number>;
      for (let j = 0; j < total - 1; j++) tally[classify(rows, j, prompt.length, delta)]++;
    }
  }
}

const heads = counts.map((k, i) => {
  const cols = KINDS.reduce((a, x) => a + k[x], 0);
  const major = KINDS.reduce((a, b) => (k[b] > k[a] ? b : a));
  return {
    layer: Math.floor(i / c.numAttentionHeads),
    head: i % c.numAttentionHeads,
    major,
    shares: Object.fromEntries(KINDS.map((x) => [x, Number((k[x] / cols).toFixed(3))])),
  };
});

/** A grayscale PNG (8-bit) of one head's map: rows = decode steps, columns = key positions. */
function png(rows: Float32Array[], path: string): void {
  const S = 3; // pixels per cell
  const w = S * rows.reduce((m, r) => Math.max(m, r.length), 0);
  const h = S * rows.length;
  const raw = Buffer.alloc((w + 1) * h);
  for (let y = 0; y < h; y++) {
    const r = rows[Math.floor(y / S)] as Float32Array;
    const max = r.reduce((m, v) => Math.max(m, v), 1e-9);
    raw[y * (w + 1)] = 0;
    // square root: weak but non-zero attention stays visible
    for (let x = 0; x < w; x++) {
      raw[y * (w + 1) + 1 + x] =
        255 - Math.round(255 * Math.sqrt((r[Math.floor(x / S)] ?? 0) / max));
    }
  }
  const crcTable = Array.from({ length: 256 }, (_, n0) => {
    let c0 = n0;
    for (let k = 0; k < 8; k++) c0 = c0 & 1 ? 0xedb88320 ^ (c0 >>> 1) : c0 >>> 1;
    return c0 >>> 0;
  });
  const crc = (b: Buffer) => {
    let c0 = 0xffffffff;
    for (const x of b) c0 = (crcTable[(c0 ^ x) & 0xff] as number) ^ (c0 >>> 8);
    return (c0 ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type), data]);
    const cr = Buffer.alloc(4);
    cr.writeUInt32BE(crc(td));
    return Buffer.concat([len, td, cr]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // grayscale
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  writeFileSync(
    path,
    Buffer.concat([
      sig,
      chunk("IHDR", ihdr),
      chunk("IDAT", deflateSync(raw)),
      chunk("IEND", Buffer.alloc(0)),
    ]),
  );
}

const images: string[] = [];
for (const kind of ["milestone", "phoenix-prefill", "lazy"] as const) {
  const best = heads.reduce((a, b) => ((b.shares[kind] ?? 0) > (a.shares[kind] ?? 0) ? b : a));
  const rows = first?.maps[best.layer]?.[best.head] ?? [];
  const path = join(values.out as string, `raas-head-${kind}-L${best.layer}H${best.head}.png`);
  png(rows, path);
  images.push(path);
}
const summary = {
  model: values.model,
  problems: n,
  tau: TAU,
  gap: GAP,
  denseExactMatch: exact / n,
  headMajority: Object.fromEntries(
    KINDS.map((k) => [k, heads.filter((h) => h.major === k).length]),
  ),
  heads,
  images,
};
if (!values.json)
  for (const h of heads)
    console.log(`L${h.layer}H${h.head} ${h.major} ${JSON.stringify(h.shares)}`);
console.log(JSON.stringify(summary));
