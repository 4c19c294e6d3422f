/**
 * Renders sim:sweep's JSON (default docs/sim/sweep.json; several files comma-separated, e.g. a
 * sweep continued with `--saturation-rps`, are pooled, a point's policies merged across files) as SVG line charts, no dependencies: for
 * each trace and cluster size, goodput and TTFT p90 against utilization, one line per policy
 * (a policy a point did not run is left out there), written next to the first file as
 * `<trace>-n<N>.svg`. Prints a markdown table per chart (goodput req/s, TTFT p90 s, cache hit
 * rate, load imbalance) for the README.
 *
 *   npm run -s sim:plot -- [--in docs/sim/sweep.json[,more.json]]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import type { RunReport } from "../bench/sim-run.ts";
import type { SweepPoint } from "../bench/sim-sweep.ts";
import { SCHEDULER_POLICIES } from "../shared/types/deployments.ts";

const { values } = parseArgs({
  options: { in: { type: "string", default: "docs/sim/sweep.json" } },
});
interface Sweep {
  config: { card: string; slo_ttft_ms: number; slo_tpot_ms: number; duration_s: number | "whole" };
  points: SweepPoint[];
}

const COLORS: Record<string, string> = {
  deepflow: "#d62728",
  "round-robin": "#1f77b4",
  "least-loaded": "#2ca02c",
  "locality-only": "#9467bd",
  "pd-aware-only": "#ff7f0e",
};
const W = 360;
const H = 240;
const M = { l: 52, r: 12, t: 28, b: 40 };

interface Series {
  name: string;
  xy: [number, number][];
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((x) => x >= v) as number;
}

/** Ablations drawn dashed (they often coincide with a baseline). */
const DASHED = new Set(["pd-aware-only", "locality-only"]);

/**
 * One panel at (ox, oy): axes, ticks, and a polyline per series. `log`: a log10 y axis from the
 * smallest positive value's decade (latencies span orders of magnitude across policies).
 */
function panel(
  ox: number,
  oy: number,
  title: string,
  yLabel: string,
  series: Series[],
  log = false,
): string {
  const xs = series.flatMap((s) => s.xy.map((p) => p[0]));
  const ys = series.flatMap((s) => s.xy.map((p) => p[1]));
  const x0 = Math.max(0, Math.floor(Math.min(...xs) * 10) / 10 - 0.1);
  const x1 = Math.ceil(Math.max(...xs) * 10) / 10 + 0.1;
  const lo = log ? Math.floor(Math.log10(Math.min(...ys.filter((y) => y > 0)))) : 0;
  const hi = log ? Math.ceil(Math.log10(Math.max(...ys))) : niceMax(Math.max(...ys));
  const f = (y: number) => (log ? Math.log10(Math.max(y, 10 ** lo)) : y);
  const px = (x: number) => ox + M.l + ((x - x0) / (x1 - x0)) * (W - M.l - M.r);
  const py = (y: number) => oy + H - M.b - ((f(y) - lo) / (hi - lo)) * (H - M.t - M.b);
  const yTicks = log
    ? Array.from({ length: hi - lo + 1 }, (_, i) => 10 ** (lo + i))
    : [0, 1, 2, 3, 4].map((i) => (hi * i) / 4);
  const out: string[] = [
    `<text x="${ox + W / 2}" y="${oy + 16}" text-anchor="middle" font-weight="bold">${title}</text>`,
    `<line x1="${px(x0)}" y1="${py(0)}" x2="${px(x1)}" y2="${py(0)}" stroke="#000"/>`,
    `<line x1="${px(x0)}" y1="${py(0)}" x2="${px(x0)}" y2="${py(log ? 10 ** hi : hi)}" stroke="#000"/>`,
    `<text x="${ox + W / 2}" y="${oy + H - 6}" text-anchor="middle">utilization (x saturation)</text>`,
    `<text transform="translate(${ox + 12},${oy + H / 2}) rotate(-90)" text-anchor="middle">${yLabel}</text>`,
  ];
  for (const y of yTicks) {
    out.push(
      `<line x1="${px(x0)}" y1="${py(y)}" x2="${px(x1)}" y2="${py(y)}" stroke="#ddd"/>`,
      `<text x="${px(x0) - 4}" y="${py(y) + 4}" text-anchor="end">${+y.toPrecision(3)}</text>`,
    );
  }
  for (const x of [...new Set(xs)]) {
    out.push(`<text x="${px(x)}" y="${py(0) + 14}" text-anchor="middle">${x}</text>`);
  }
  for (const s of series) {
    const pts = s.xy.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" ");
    const c = COLORS[s.name] ?? "#333";
    const dash = DASHED.has(s.name) ? ' stroke-dasharray="6 4"' : "";
    out.push(`<polyline points="${pts}" fill="none" stroke="${c}" stroke-width="2"${dash}/>`);
    for (const [x, y] of s.xy) {
      out.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(y).toFixed(1)}" r="2.5" fill="${c}"/>`);
    }
  }
  return out.join("\n");
}

/** Every policy any point ran, in SCHEDULER_POLICIES' order (deepflow first). */
function policiesOf(points: SweepPoint[]): string[] {
  const rank = (n: string) => {
    const i = (SCHEDULER_POLICIES as readonly string[]).indexOf(n);
    return i < 0 ? SCHEDULER_POLICIES.length : i;
  };
  return [...new Set(points.flatMap((p) => Object.keys(p.policies)))].sort(
    (a, b) => rank(a) - rank(b),
  );
}

function seriesOf(points: SweepPoint[], metric: (r: RunReport) => number | null): Series[] {
  const names = policiesOf(points);
  return names.map((name) => ({
    name,
    xy: points.flatMap((p) => {
      const r = p.policies[name];
      const v = r ? metric(r) : null;
      return v === null ? [] : [[p.utilization, v] as [number, number]];
    }),
  }));
}

/**
 * Points of several files pooled: one point per trace, cluster size and utilization, whose
 * policies are the union of the files' (a later file's run of a policy replaces an earlier one's,
 * so a sweep of more policies or of a changed policy can be added to a committed one).
 * @throws Error when two files ran the same point at different rates (different saturations).
 */
function pool(sweeps: readonly Sweep[]): SweepPoint[] {
  const byKey = new Map<string, SweepPoint>();
  for (const p of sweeps.flatMap((w) => w.points)) {
    const k = `${p.trace} ${p.instances} ${p.utilization}`;
    const prev = byKey.get(k);
    if (prev && prev.rate !== p.rate) {
      throw new Error(`${k}: rates ${prev.rate} and ${p.rate} differ; pool runs of one saturation`);
    }
    byKey.set(k, prev ? { ...prev, policies: { ...prev.policies, ...p.policies } } : p);
  }
  return [...byKey.values()];
}

const inputs = values.in.split(",");
const sweeps = inputs.map((f) => JSON.parse(readFileSync(f, "utf8")) as Sweep);
plot(inputs[0] as string, { config: (sweeps[0] as Sweep).config, points: pool(sweeps) });

function plot(input: string, sweep: Sweep): void {
  const groups = new Map<string, SweepPoint[]>();
  for (const p of sweep.points) {
    const k = `${p.trace.replace(/\.(csv|jsonl)$/, "")}-n${p.instances}`;
    groups.set(k, [...(groups.get(k) ?? []), p]);
  }
  const arrivals =
    sweep.config.duration_s === "whole"
      ? "Poisson arrivals carrying every row of the trace"
      : `${sweep.config.duration_s} s of Poisson arrivals`;
  for (const [key, pts] of groups) {
    pts.sort((a, b) => a.utilization - b.utilization);
    const names = policiesOf(pts);
    const legend = names
      .map(
        (n, i) =>
          `<rect x="${M.l + i * 140}" y="${H + 6}" width="12" height="12" fill="${COLORS[n] ?? "#333"}"/>` +
          `<text x="${M.l + i * 140 + 16}" y="${H + 17}">${n}</text>`,
      )
      .join("\n");
    const head = pts[0] as SweepPoint;
    const title = `${head.trace}, ${head.instances} instances (saturation ${head.saturation_rps} req/s)`;
    const svg = [
      `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H + 62}" font-family="sans-serif" font-size="11">`,
      `<title>${title}: goodput and TTFT p90 against utilization, per policy</title>`,
      `<rect width="100%" height="100%" fill="#fff"/>`,
      panel(
        0,
        0,
        "goodput (req/s)",
        "req/s",
        seriesOf(pts, (r) => r.goodput_rps),
      ),
      panel(
        W,
        0,
        "TTFT p90 (s, log scale)",
        "s",
        seriesOf(pts, (r) => (r.ttft_ms.p90 ?? 0) / 1000),
        true,
      ),
      legend,
      `<text x="8" y="${H + 38}" fill="#666">${title}</text>`,
      `<text x="8" y="${H + 54}" fill="#666">${sweep.config.card}; SLO TTFT ${sweep.config.slo_ttft_ms} ms, TPOT ${sweep.config.slo_tpot_ms} ms; ${arrivals}</text>`,
      "</svg>",
    ].join("\n");
    const file = join(dirname(input), `${key}.svg`);
    writeFileSync(file, `${svg}\n`);
    console.log(`\n${title} (${file})\n`);
    console.log(`| utilization | ${names.join(" | ")} |`);
    console.log(`| --- | ${names.map(() => "---").join(" | ")} |`);
    for (const p of pts) {
      const cells = names.map((n) => {
        const r = p.policies[n];
        if (!r) return "–";
        const ttft = ((r.ttft_ms.p90 ?? 0) / 1000).toFixed(1);
        return `${r.goodput_rps} / ${ttft} / ${r.cache_hit_rate.toFixed(3)} / ${r.load_imbalance}`;
      });
      console.log(`| ${p.utilization} (${p.rate} req/s) | ${cells.join(" | ")} |`);
    }
  }
}
