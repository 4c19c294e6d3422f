/**
 * The dashboard's uPlot charts: request rate and the TTFT and TPOT percentiles, computed from the
 * kept /metrics scrapes (shared/serving/metric-series.ts). Each chart is created on the first draw
 * and given new data on later ones.
 */
import uPlot from "uplot";
import {
  chartSeries,
  type Scrape,
  type SeriesSpec,
} from "../../../shared/serving/metric-series.ts";
import { $ } from "./dom.ts";

/** Quantiles are over the observations of the last minute; charts show five minutes. */
const WINDOW_MS = 60_000;
const CHART_SPAN_S = 5 * 60;

const QUANTILES = [0.5, 0.9, 0.99];
const COLORS = ["#2563eb", "#d97706", "#dc2626", "#059669"];
const CHARTS: { id: string; title: string; unit: string; specs: SeriesSpec[] }[] = [
  {
    id: "chart-rate",
    title: "requests/s",
    unit: "",
    specs: [{ key: "requests/s", kind: "rate", metric: "flowserve:requests_total" }],
  },
  ...[
    ["chart-ttft", "time to first token", "flowserve:time_to_first_token_seconds"],
    ["chart-tpot", "time per output token", "flowserve:time_per_output_token_seconds"],
  ].map(([id, title, metric]) => ({
    id: id as string,
    title: `${title} (s, last minute)`,
    unit: "s",
    specs: QUANTILES.map(
      (q): SeriesSpec => ({ key: `p${q * 100}`, kind: "quantile", metric: metric as string, q }),
    ),
  })),
];
const plots = new Map<string, uPlot>();

/** Draws (or redraws) every chart from the kept scrapes. */
export function drawCharts(history: Scrape[]): void {
  for (const c of CHARTS) {
    const s = chartSeries(history, c.specs, WINDOW_MS);
    const data: uPlot.AlignedData = [s.t, ...c.specs.map((x) => s.values[x.key] ?? [])];
    const plot = plots.get(c.id);
    if (plot) {
      plot.setData(data);
      continue;
    }
    const host = $(c.id);
    const opts: uPlot.Options = {
      title: c.title,
      width: Math.max(280, host.clientWidth),
      height: 180,
      // the last few minutes, also while there are only one or two points
      scales: { x: { time: true, range: (_u, _min, max) => [max - CHART_SPAN_S, max] } },
      series: [
        {},
        ...c.specs.map((x, i) => ({
          label: x.key,
          stroke: COLORS[i % COLORS.length] as string,
          width: 1.5,
          spanGaps: false,
        })),
      ],
      axes: [{}, { size: 56 }],
    };
    plots.set(c.id, new uPlot(opts, data, host));
  }
}
