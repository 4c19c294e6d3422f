/**
 * Renders `npm run -s bench:raas -- --full --json` output as an SVG of two panels: KV bytes held
 * and ms per output token against decode length, one line per policy (docs/raas-curves.svg).
 *
 *   npm run -s bench:raas -- --full --json | tail -1 > /tmp/raas.json
 *   npx tsx scripts/plot-raas.ts /tmp/raas.json docs/raas-curves.svg
 */
import { readFileSync, writeFileSync } from "node:fs";

interface Curve {
  policy: string;
  budget: number;
  decodeTokens: number[];
  msPerToken: number[];
  cpuMsPerToken: number[];
  kvBytes: number[];
}

const [input, output] = process.argv.slice(2);
if (!input || !output) throw new Error("usage: plot-raas.ts BENCH.json OUT.svg");
// one line per policy, at the first (README) budget
const all = (JSON.parse(readFileSync(input, "utf8")) as { curves: Curve[] }).curves;
const curves = all.filter((c) => c.budget === all[0]?.budget);
const COLORS = ["#222", "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd"];
const W = 420;
const H = 260;
const M = { l: 60, r: 10, t: 30, b: 40 };

function panel(x0: number, title: string, pick: (c: Curve) => number[], unit: string): string {
  const xs = curves.flatMap((c) => c.decodeTokens);
  const ys = curves.flatMap(pick);
  const xMax = Math.max(...xs);
  const yMax = Math.max(...ys) * 1.05;
  const px = (x: number) => x0 + M.l + (x / xMax) * (W - M.l - M.r);
  const py = (y: number) => M.t + (1 - y / yMax) * (H - M.t - M.b);
  let svg = `<text x="${x0 + W / 2}" y="18" text-anchor="middle" font-size="13">${title}</text>`;
  svg += `<line x1="${px(0)}" y1="${py(0)}" x2="${px(xMax)}" y2="${py(0)}" stroke="#888"/>`;
  svg += `<line x1="${px(0)}" y1="${py(0)}" x2="${px(0)}" y2="${py(yMax)}" stroke="#888"/>`;
  for (let i = 0; i <= 4; i++) {
    const y = (yMax * i) / 4;
    svg += `<text x="${px(0) - 4}" y="${py(y) + 4}" text-anchor="end" font-size="10">${y < 10 ? y.toFixed(2) : Math.round(y)}</text>`;
    const x = (xMax * i) / 4;
    svg += `<text x="${px(x)}" y="${py(0) + 14}" text-anchor="middle" font-size="10">${Math.round(x)}</text>`;
  }
  svg += `<text x="${x0 + W / 2}" y="${H - 6}" text-anchor="middle" font-size="11">decode tokens</text>`;
  svg += `<text x="${x0 + 12}" y="${M.t - 6}" font-size="10">${unit}</text>`;
  curves.forEach((c, i) => {
    const pts = c.decodeTokens.map(
      (x, j) => `${px(x).toFixed(1)},${py(pick(c)[j] as number).toFixed(1)}`,
    );
    svg += `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${pts.join(" ")}"/>`;
  });
  return svg;
}

const legend = curves
  .map(
    (c, i) =>
      `<text x="${20 + i * 130}" y="${H + 16}" font-size="11" fill="${COLORS[i % COLORS.length]}">${c.policy} (budget ${c.budget})</text>`,
  )
  .join("");
const svg =
  `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 26}" font-family="sans-serif">` +
  "<title>KV bytes and CPU time per output token against decode length, per KV-cache policy</title>" +
  `<rect width="100%" height="100%" fill="white"/>` +
  panel(0, "KV bytes held", (c) => c.kvBytes.map((b) => b / 1024), "KiB") +
  panel(W, "CPU time per output token", (c) => c.cpuMsPerToken, "ms") +
  legend +
  "</svg>\n";
writeFileSync(output, svg);
