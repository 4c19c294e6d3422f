/**
 * Measures the PD heatmap in the simulator and its sign stability across rates
 * (shared/sim/heatmap.ts), for a model card (default: the simulator's default card).
 *
 *   npm run -s sim:heatmap -- [--card PATH] [--utilizations 0.25,0.5,0.75] [--requests N]
 *     [--out PATH]
 *
 * Prints a sign table per cell and, last, one JSON line with the stable fraction; with --out
 * writes the profile measured at the middle utilization (a `PdProfile`, usable with
 * `sim:serve --profile` or `PUT /api/models/:name/pd-profile`).
 */
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEFAULT_CARD_PATH, readCard } from "../bench/sim-run.ts";
import { measureHeatmap } from "../shared/sim/heatmap.ts";

const { values } = parseArgs({
  options: {
    card: { type: "string" },
    utilizations: { type: "string", default: "0.25,0.5,0.75" },
    requests: { type: "string", default: "40" },
    out: { type: "string" },
  },
});
const card = readCard(values.card ?? DEFAULT_CARD_PATH);
const utilizations = values.utilizations.split(",").map(Number);
const inputBuckets = [512, 2048, 8192, 32768].filter((x) => x * 1.1 < card.maxModelLen);
const outputBuckets = [16, 128, 512, 1024].filter((x) => x * 4 < card.maxModelLen);
const t = performance.now();
const r = measureHeatmap(card, {
  inputBuckets,
  outputBuckets,
  utilizations,
  requestsPerCell: Number(values.requests),
  seed: 1,
});
console.log(`sign of colocated/pd - 1 at utilizations ${utilizations.join(", ")} (+: PD faster)`);
console.log(`input \\ output | ${outputBuckets.join(" | ")}`);
inputBuckets.forEach((input, i) => {
  const row = (r.signs[i] ?? []).map((cell) =>
    cell.map((s) => (s > 0 ? "+" : s < 0 ? "-" : "0")).join(""),
  );
  console.log(`${input} | ${row.join(" | ")}`);
});
const middle = r.profiles[Math.floor(r.profiles.length / 2)];
if (values.out && middle) writeFileSync(values.out, `${JSON.stringify(middle, null, 2)}\n`);
console.log(
  JSON.stringify({
    card: card.name,
    utilizations,
    stable_cells: r.numStable,
    cells: r.numCells,
    stable_fraction: Number((r.numStable / r.numCells).toFixed(3)),
    wall_s: Number(((performance.now() - t) / 1000).toFixed(1)),
  }),
);
