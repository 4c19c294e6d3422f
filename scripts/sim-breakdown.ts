/**
 * Where goodput goes: reads the per-request outcomes that `sim:serve --outcomes PATH` wrote (one
 * or several policies on the same arrivals) and prints, per policy, which requests missed which
 * SLO (TTFT only, TPOT only, both) by prompt length, by the share of the prompt served from the
 * prefix cache, and by arrival time (fifths of the run), plus each instance's share of the prompt
 * tokens it was given. Also the ceiling no placement can pass: a request whose prompt, computed
 * alone on an idle instance of the card in `maxNumBatchedTokens` chunks with no cached prefix,
 * already takes longer than the TTFT SLO (`soloTtftMs`, shared/sim/ceiling.ts) misses under every policy unless a
 * cached prefix shortens it. With `--trace` (the Mooncake trace the outcomes came from), the
 * ceiling also grants each request the longest prefix it shares with any earlier row (`bestCachedTokens`; one
 * cache of unbounded size that every instance shares: more than any placement can reach): a
 * request over the TTFT SLO even then is lost under every policy, and the rest bound goodput.
 * (TPOT needs no ceiling: one decode alone on the card is far below any TPOT SLO used here.)
 * `--ttft-slo-scale K` also counts goodput under a per-request TTFT SLO, max(the SLO, K x the
 * request's own `soloTtftMs`): a second view for traces whose longest prompts cannot meet a
 * fixed TTFT SLO on an idle instance. Last line: one JSON object with the same numbers.
 *
 *   npm run -s sim:breakdown -- --outcomes PATH [--trace PATH] [--card PATH] [--slo-ttft-ms A]
 *     [--slo-tpot-ms B] [--ttft-slo-scale K]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEFAULT_CARD_PATH, FALLBACK_SLO, readCard } from "../bench/sim-run.ts";
import { loadTrace, MOONCAKE_BLOCK_SIZE } from "../bench/traces.ts";
import { bestCachedTokens, soloTtftMs } from "../shared/sim/ceiling.ts";
import type { RequestOutcome } from "../shared/sim/cluster.ts";
import { tpotMs } from "../shared/sim/report.ts";

const { values } = parseArgs({
  options: {
    outcomes: { type: "string" },
    trace: { type: "string" },
    card: { type: "string", default: DEFAULT_CARD_PATH },
    "slo-ttft-ms": { type: "string" },
    "slo-tpot-ms": { type: "string" },
    "ttft-slo-scale": { type: "string" },
  },
});
if (!values.outcomes) {
  console.error("sim:breakdown: --outcomes PATH is required (sim:serve --outcomes writes it)");
  process.exit(2);
}
const card = readCard(values.card);
const sloTtft = Number(values["slo-ttft-ms"] ?? card.sloTtftMs ?? FALLBACK_SLO.ttftMs);
const ttftScale = values["ttft-slo-scale"] === undefined ? null : Number(values["ttft-slo-scale"]);
const sloTpot = Number(values["slo-tpot-ms"] ?? card.sloTpotMs ?? FALLBACK_SLO.tpotMs);

async function bestCached(path: string, blockSize: number): Promise<Map<string, number>> {
  const t = await loadTrace(path, () => true);
  const rows = t.rows.map((r) => ({ ...r, id: `r${r.rowIndex}` }));
  return bestCachedTokens(rows, MOONCAKE_BLOCK_SIZE, blockSize);
}

type Row = RequestOutcome & { policy: string };
const rows = readFileSync(values.outcomes, "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l) => JSON.parse(l) as Row);
const byPolicy = new Map<string, Row[]>();
for (const r of rows) {
  const list = byPolicy.get(r.policy) ?? [];
  list.push(r);
  byPolicy.set(r.policy, list);
}

type Miss = "ok" | "ttft" | "tpot" | "both" | "failed";
function miss(o: RequestOutcome, ttftSlo = sloTtft): Miss {
  if (o.failure !== null || o.finishMs === null || o.firstTokenMs === null) return "failed";
  const t = o.firstTokenMs - o.arrivalMs > ttftSlo;
  const tp = tpotMs(o);
  const p = tp !== null && tp > sloTpot;
  return t && p ? "both" : t ? "ttft" : p ? "tpot" : "ok";
}

const LENGTH_BINS = [2048, 8192, 32768, Number.POSITIVE_INFINITY];
const lengthBin = (n: number) => {
  const i = LENGTH_BINS.findIndex((b) => n < b);
  return i === 0 ? "<2K" : i === 1 ? "2K-8K" : i === 2 ? "8K-32K" : ">=32K";
};
const hitBin = (o: RequestOutcome) => {
  const f = o.numCachedTokens / Math.max(1, o.numPromptTokens);
  return f === 0 ? "0" : f < 0.5 ? "<50%" : ">=50%";
};

const BIN_ORDER = ["<2K", "2K-8K", "8K-32K", ">=32K", "0", "<50%", ">=50%"];
const byBin = (a: string, b: string) =>
  BIN_ORDER.indexOf(a) - BIN_ORDER.indexOf(b) || a.localeCompare(b);

type Counts = Record<Miss, number>;
const zero = (): Counts => ({ ok: 0, ttft: 0, tpot: 0, both: 0, failed: 0 });
function tally(list: readonly Row[], key: (r: Row) => string): Record<string, Counts> {
  const out: Record<string, Counts> = {};
  for (const r of list) {
    const k = key(r);
    out[k] ??= zero();
    (out[k] as Counts)[miss(r)]++;
  }
  return out;
}

const first = byPolicy.values().next().value as Row[];
const t0 = Math.min(...first.map((r) => r.arrivalMs));
const t1 = Math.max(...first.map((r) => r.arrivalMs));
const fifth = (r: Row) =>
  `${Math.min(4, Math.floor(((r.arrivalMs - t0) / (t1 - t0 + 1)) * 5)) + 1}/5`;
const infeasible = new Set(
  first.filter((r) => soloTtftMs(card, r.numPromptTokens) > sloTtft).map((r) => r.id),
);

const best = values.trace ? await bestCached(values.trace, card.blockSize) : null;
const lostEvenCached = best
  ? first.filter((r) => soloTtftMs(card, r.numPromptTokens, best.get(r.id) ?? 0) > sloTtft).length
  : null;

const result: Record<string, unknown> = {};
const fmt = (c: Counts) =>
  `ok ${c.ok}, ttft ${c.ttft}, tpot ${c.tpot}, both ${c.both}${c.failed ? `, failed ${c.failed}` : ""}`;
console.log(
  `SLOs: TTFT ${sloTtft} ms, TPOT ${sloTpot} ms; ${infeasible.size} of ${first.length} prompts ` +
    `take longer than the TTFT SLO alone on an idle instance without a cached prefix` +
    (lostEvenCached === null
      ? ""
      : `, ${lostEvenCached} even with every earlier row cached: at most ` +
        `${first.length - lostEvenCached} can meet both SLOs`),
);
for (const [policy, list] of byPolicy) {
  const all = tally(list, () => "all").all as Counts;
  const byLength = tally(list, (r) => lengthBin(r.numPromptTokens));
  const byHit = tally(list, hitBin);
  const byTime = tally(list, fifth);
  const bySolo = tally(list, (r) => (infeasible.has(r.id) ? "over SLO alone" : "within alone"));
  const prompt = new Map<string, number>();
  for (const r of list) {
    if (r.instanceId) prompt.set(r.instanceId, (prompt.get(r.instanceId) ?? 0) + r.numPromptTokens);
  }
  const shares = [...prompt.values()];
  const mean = shares.reduce((a, b) => a + b, 0) / Math.max(1, shares.length);
  const promptImbalance = Number((Math.max(...shares) / mean).toFixed(3));
  console.log(`\n${policy}: ${fmt(all)}; prompt tokens max/mean instance ${promptImbalance}`);
  for (const [name, t] of [
    ["prompt length", byLength],
    ["cached share", byHit],
    ["arrival fifth", byTime],
    ["solo prefill", bySolo],
  ] as const) {
    for (const k of Object.keys(t).sort(byBin))
      console.log(`  ${name} ${k}: ${fmt(t[k] as Counts)}`);
  }
  const start = Math.min(...list.map((r) => r.arrivalMs));
  const end = Math.max(start, ...list.map((r) => r.finishMs ?? start));
  const makespanS = (end - start) / 1000;
  const goodput = Number((all.ok / makespanS).toFixed(3));
  let scaled: { ok: number; goodput_rps: number } | null = null;
  if (ttftScale !== null) {
    const ok = list.filter(
      (r) => miss(r, Math.max(sloTtft, ttftScale * soloTtftMs(card, r.numPromptTokens))) === "ok",
    ).length;
    scaled = { ok, goodput_rps: Number((ok / makespanS).toFixed(3)) };
    console.log(
      `  TTFT SLO max(${sloTtft} ms, ${ttftScale} x alone): ok ${ok}, goodput ${scaled.goodput_rps} req/s`,
    );
  }
  // TTFT misses of requests that an unbounded cache would let meet it: the cache they got was
  // too short for that (their prompt's uncached part alone takes longer), or they queued
  let ttftCache: number | null = null;
  let ttftQueue: number | null = null;
  if (best) {
    const missed = list.filter((r) => {
      const m = miss(r);
      const winnable = soloTtftMs(card, r.numPromptTokens, best.get(r.id) ?? 0) <= sloTtft;
      return (m === "ttft" || m === "both") && winnable;
    });
    ttftCache = missed.filter(
      (r) => soloTtftMs(card, r.numPromptTokens, r.numCachedTokens) > sloTtft,
    ).length;
    ttftQueue = missed.length - ttftCache;
    console.log(
      `  TTFT misses an unbounded cache could avoid: ${ttftCache} with too little cached, ` +
        `${ttftQueue} queued`,
    );
  }
  result[policy] = {
    ttftCache,
    ttftQueue,
    all,
    goodput_rps: goodput,
    byLength,
    byHit,
    byTime,
    bySolo,
    promptImbalance,
    scaled,
  };
}
console.log(
  JSON.stringify({
    slo_ttft_ms: sloTtft,
    slo_tpot_ms: sloTpot,
    requests: first.length,
    over_slo_alone: infeasible.size,
    over_slo_alone_cached: lostEvenCached,
    policies: result,
  }),
);
