/**
 * The default PD heatmap of a model nobody profiled (shared/serving/default-heatmap.ts), as the
 * JobExecutor derives it, with what it rests on:
 *   - the derived card (shared/sim/derive-card.ts) and what deriving the heatmap costs here;
 *   - the heatmap's cells (colocated / PD ms) at the rate the JobExecutor uses;
 *   - its signs at 0.25 / 0.5 / 0.75 of the colocated pair's saturation (sign stability);
 *   - with --card, a card measured for the same model (`profile:steps --model`): the heatmap
 *     with the measured step costs in place of the derived ones, and the cells whose sign agrees;
 *   - with --profile, a profile measured on a server (`profile:pd --no-upload --json`, its last
 *     line): its signs beside the derived card's on its own buckets, at --low (light load, as
 *     profile:pd's one request at a time) and at 0.5.
 *
 *   npm run -s sim:default-heatmap -- --model PATH [--card CARD.json] [--profile PD.json]
 *     [--low 0.05]
 *
 * The engine shape is the serving config's defaults (MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS,
 * KV_BLOCK_SIZE), as a JobExecutor with default vars uses. The last line is one JSON object.
 */
import { readFileSync, statSync } from "node:fs";
import { parseArgs } from "node:util";
import { readCard } from "../bench/sim-run.ts";
import { servingConfig } from "../shared/config.ts";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import {
  DEFAULT_HEATMAP,
  defaultHeatmapBuckets,
  defaultPdProfile,
} from "../shared/serving/default-heatmap.ts";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import type { ModelCard } from "../shared/sim/cost-model.ts";
import { deriveCard } from "../shared/sim/derive-card.ts";
import { measureHeatmap } from "../shared/sim/heatmap.ts";
import { REFERENCE_CPU_CARD } from "../shared/sim/reference-card.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    card: { type: "string" },
    profile: { type: "string" },
    low: { type: "string", default: "0.05" },
  },
});
if (!values.model) {
  console.error("usage: npm run -s sim:default-heatmap -- --model PATH [--card C] [--profile P]");
  process.exit(2);
}
const config = modelConfigFromGguf(
  parseGguf(new Uint8Array(readFileSync(values.model)), { headerOnly: true }),
);
const target = { config, weightBytes: statSync(values.model).size };
const serving = servingConfig({});
const shape = {
  maxNumSeqs: serving.maxNumSeqs,
  maxNumBatchedTokens: serving.maxNumBatchedTokens,
  blockSize: serving.blockSize,
};
const card = deriveCard(target, REFERENCE_CPU_CARD, shape);
console.log(`derived card: ${JSON.stringify(card)}`);

defaultPdProfile(config.name, target, shape); // JIT warm-up, not timed
const t0 = performance.now();
const used = defaultPdProfile(config.name, target, shape);
const deriveMs = performance.now() - t0;
console.log(
  `default heatmap (utilization ${DEFAULT_HEATMAP.utilization}, ${DEFAULT_HEATMAP.requestsPerCell} requests per cell), colocated / PD mean e2e ms, derived in ${deriveMs.toFixed(0)} ms:`,
);
console.log(`input \\ output | ${used.outputBuckets.join(" | ")}`);
used.inputBuckets.forEach((input, i) => {
  const row = used.outputBuckets.map(
    (_, j) => `${used.colocatedMs[i]?.[j]} / ${used.pdMs[i]?.[j]}`,
  );
  console.log(`${input} | ${row.join(" | ")}`);
});

const UTILIZATIONS = [0.25, 0.5, 0.75];
const sign = (s: number) => (s > 0 ? "+" : s < 0 ? "-" : "0");
const heatmap = (c: ModelCard, us: number[], buckets = defaultHeatmapBuckets(c.maxModelLen)) =>
  measureHeatmap(c, {
    ...buckets,
    utilizations: us,
    requestsPerCell: DEFAULT_HEATMAP.requestsPerCell,
    seed: DEFAULT_HEATMAP.seed,
  });
const rates = heatmap(card, UTILIZATIONS);
console.log(`signs of colocated/PD - 1 at ${UTILIZATIONS.join(", ")} (+: PD faster):`);
used.inputBuckets.forEach((input, i) => {
  console.log(`${input} | ${(rates.signs[i] ?? []).map((c) => c.map(sign).join("")).join(" | ")}`);
});

/** Cells (all utilizations) whose sign is the same in `a` and `b`. */
const agreeing = (a: number[][][], b: number[][][]) =>
  a.flat().reduce((n, cell, k) => n + cell.filter((s, u) => s === b.flat()[k]?.[u]).length, 0);

let measuredCard: { agree: number; cells: number; coefficients: object } | null = null;
if (values.card) {
  const m = readCard(values.card);
  const { a, b, c, d, e } = m;
  const r = heatmap({ ...card, a, b, c, d, ...(e === undefined ? {} : { e }) }, UTILIZATIONS);
  console.log(`signs with the measured step costs of ${values.card}:`);
  used.inputBuckets.forEach((input, i) => {
    console.log(`${input} | ${(r.signs[i] ?? []).map((x) => x.map(sign).join("")).join(" | ")}`);
  });
  const cells = rates.numCells * UTILIZATIONS.length;
  measuredCard = { agree: agreeing(rates.signs, r.signs), cells, coefficients: { a, b, c, d } };
  console.log(
    `derived vs measured: ${measuredCard.agree} of ${cells} (cell, utilization) signs agree`,
  );
}

let measuredProfile: { low: number; mid: number; cells: number } | null = null;
if (values.profile) {
  const lines = readFileSync(values.profile, "utf8").trim().split("\n");
  const p = JSON.parse(lines[lines.length - 1] as string) as PdProfile;
  const low = Number(values.low);
  const r = heatmap(card, [low, 0.5], {
    inputBuckets: p.inputBuckets,
    outputBuckets: p.outputBuckets,
  });
  const measured = p.colocatedMs.map((row, i) =>
    row.map((c, j) => Math.sign(c / (p.pdMs[i]?.[j] as number) - 1)),
  );
  console.log(`measured (${values.profile}) | derived at ${low} | derived at 0.5, per cell:`);
  p.inputBuckets.forEach((input, i) => {
    const row = p.outputBuckets.map((o, j) => {
      const d = r.signs[i]?.[j] ?? [];
      return `${o}: ${sign(measured[i]?.[j] ?? 0)} ${sign(d[0] ?? 0)} ${sign(d[1] ?? 0)}`;
    });
    console.log(`${input} | ${row.join(" | ")}`);
  });
  const count = (u: number) =>
    measured.flat().filter((s, k) => s === (r.signs.flat()[k]?.[u] ?? 0)).length;
  measuredProfile = { low: count(0), mid: count(1), cells: measured.flat().length };
}

console.log(
  JSON.stringify({
    model: config.name,
    derive_ms: Number(deriveMs.toFixed(1)),
    cells: rates.numCells,
    stable_cells: rates.numStable,
    stable_fraction: Number((rates.numStable / rates.numCells).toFixed(3)),
    default_signs: used.colocatedMs.map((row, i) =>
      row.map((c, j) => sign(Math.sign(c / (used.pdMs[i]?.[j] as number) - 1))).join(""),
    ),
    measured_card: measuredCard,
    measured_profile: measuredProfile,
  }),
);
