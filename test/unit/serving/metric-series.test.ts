/** The dashboard's metric series: the text format the server renders, rates and quantiles. */
import { describe, expect, it } from "vitest";
import {
  type Bucket,
  bucketDelta,
  bucketsOf,
  chartSeries,
  histogramQuantile,
  parsePrometheusText,
  ratePerSecond,
  type Scrape,
  sumOf,
  trimHistory,
  windowQuantile,
} from "../../../shared/serving/metric-series.ts";
import {
  type MetricDef,
  MetricsRegistry,
  renderPrometheus,
} from "../../../shared/serving/metrics.ts";

const DEFS: MetricDef[] = [
  { name: "t:req_total", help: "R.", type: "counter", labelNames: ["model"], merge: "sum" },
  {
    name: "t:ttft_seconds",
    help: "T.",
    type: "histogram",
    labelNames: ["model"],
    merge: "sum",
    buckets: [0.1, 0.5, 1],
  },
];

function scrape(at: number, text: string): Scrape {
  return { at, samples: parsePrometheusText(text) };
}

describe("parsePrometheusText", () => {
  it("reads what renderPrometheus writes", () => {
    const r = new MetricsRegistry(DEFS);
    r.inc("t:req_total", { model: 'a"b' }, 3);
    r.observe("t:ttft_seconds", { model: "m" }, 0.3);
    const samples = parsePrometheusText(renderPrometheus(DEFS, r.snapshot()));
    expect(samples[0]).toEqual({ name: "t:req_total", labels: { model: 'a"b' }, value: 3 });
    expect(bucketsOf(samples, "t:ttft_seconds")).toEqual([
      { le: 0.1, count: 0 },
      { le: 0.5, count: 1 },
      { le: 1, count: 1 },
      { le: Number.POSITIVE_INFINITY, count: 1 },
    ]);
    expect(sumOf(samples, "t:ttft_seconds_count")).toBe(1);
  });

  it("skips comments and malformed lines, and sums series by label", () => {
    const s = parsePrometheusText('# HELP x y\nx{m="a"} 1\nx{m="b"} 2\nnot a sample line\n\nx 4\n');
    expect(s).toHaveLength(3);
    expect(sumOf(s, "x")).toBe(7);
    expect(sumOf(s, "x", { m: "b" })).toBe(2);
  });
});

describe("histogramQuantile", () => {
  const b = (pairs: [number, number][]): Bucket[] => pairs.map(([le, count]) => ({ le, count }));

  it("interpolates inside the bucket that holds the rank, like Prometheus", () => {
    const buckets = b([
      [0.1, 10],
      [0.5, 30],
      [1, 40],
      [Number.POSITIVE_INFINITY, 40],
    ]);
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.1 + 0.4 * (10 / 20));
    expect(histogramQuantile(0.1, buckets)).toBeCloseTo(0.04); // lowest bucket starts at 0
    expect(histogramQuantile(0.99, buckets)).toBeCloseTo(0.5 + 0.5 * (9.6 / 10));
  });

  it("answers the highest finite bound for a rank in +Inf, NaN without observations", () => {
    expect(
      histogramQuantile(
        0.9,
        b([
          [1, 1],
          [Number.POSITIVE_INFINITY, 10],
        ]),
      ),
    ).toBe(1);
    expect(
      histogramQuantile(
        0.5,
        b([
          [1, 0],
          [Number.POSITIVE_INFINITY, 0],
        ]),
      ),
    ).toBeNaN();
    expect(histogramQuantile(0.5, [])).toBeNaN();
  });
});

describe("deltas between scrapes", () => {
  const text = (n: number, fast: number, slow: number) =>
    [
      `t:req_total{model="m"} ${n}`,
      `t:ttft_seconds_bucket{model="m",le="0.1"} ${fast}`,
      `t:ttft_seconds_bucket{model="m",le="1"} ${fast + slow}`,
      `t:ttft_seconds_bucket{model="m",le="+Inf"} ${fast + slow}`,
    ].join("\n");

  it("computes rates from counter deltas and quantiles from bucket deltas", () => {
    const a = scrape(0, text(10, 100, 0));
    const b = scrape(2000, text(14, 100, 4));
    expect(ratePerSecond(a, b, "t:req_total")).toBe(2);
    // all 100 early observations were fast; the 4 new ones are slow
    expect(windowQuantile(a, b, "t:ttft_seconds", 0.5)).toBeCloseTo(0.55);
    expect(histogramQuantile(0.5, bucketsOf(b.samples, "t:ttft_seconds"))).toBeLessThan(0.1);
  });

  it("treats a decrease as a restart of the counters", () => {
    const a = scrape(0, text(10, 5, 5));
    const b = scrape(1000, text(3, 0, 2));
    expect(ratePerSecond(a, b, "t:req_total")).toBe(3);
    const d = bucketDelta(
      bucketsOf(a.samples, "t:ttft_seconds"),
      bucketsOf(b.samples, "t:ttft_seconds"),
    );
    expect(d.map((x) => x.count)).toEqual([0, 2, 2]);
  });

  it("builds chart series over a window, null where nothing was observed", () => {
    const history = [
      scrape(0, text(0, 0, 0)),
      scrape(2000, text(2, 0, 2)),
      scrape(4000, text(2, 0, 2)),
      scrape(6000, text(2, 0, 2)),
    ];
    const specs = [
      { key: "rps", kind: "rate", metric: "t:req_total" },
      { key: "p50", kind: "quantile", metric: "t:ttft_seconds", q: 0.5 },
    ] as const;
    const s = chartSeries(history, specs, 4000);
    expect(s.t).toEqual([2, 4, 6]);
    expect(s.values.rps).toEqual([1, 0, 0]);
    // the window of the last point (2 s .. 6 s) holds no observations
    expect(s.values.p50?.[0]).toBeCloseTo(0.55);
    expect(s.values.p50?.[1]).toBeCloseTo(0.55);
    expect(s.values.p50?.[2]).toBeNull();
    expect(trimHistory(history, 3000).map((h) => h.at)).toEqual([4000, 6000]);
  });
});

describe("parsePrometheusText against a real parser", () => {
  it("reads the same counter and bucket values as parse-prometheus-text-format", async () => {
    const { default: parsePrometheus } = await import("parse-prometheus-text-format");
    const r = new MetricsRegistry(DEFS);
    r.inc("t:req_total", { model: 'a"b\\c' }, 7, 1);
    r.inc("t:req_total", { model: "m" }, 2, 1);
    for (const v of [0.05, 0.3, 0.3, 2]) r.observe("t:ttft_seconds", { model: "m" }, v, 1);
    const text = renderPrometheus(DEFS, r.snapshot());
    const ours = parsePrometheusText(text);
    const theirs = parsePrometheus(text);
    // counters: every labelled sample, values equal
    const counter = theirs.find((f) => f.name === "t:req_total");
    const want = (counter?.metrics ?? []).map((x) => [x.labels?.model, Number(x.value)]);
    const got = ours.filter((s) => s.name === "t:req_total").map((s) => [s.labels.model, s.value]);
    expect(got).toEqual(want);
    // histogram buckets (the real parser keeps only `le` on bucket lines)
    const hist = theirs.find((f) => f.name === "t:ttft_seconds");
    const theirBuckets = Object.entries(
      (hist?.metrics[0] as { buckets?: Record<string, string> } | undefined)?.buckets ?? {},
    ).map(([le, v]) => [le, Number(v)]);
    const ourBuckets = ours
      .filter((s) => s.name === "t:ttft_seconds_bucket")
      .map((s) => [s.labels.le, s.value]);
    expect(Object.fromEntries(ourBuckets)).toEqual(Object.fromEntries(theirBuckets));
    expect(ourBuckets.at(-1)).toEqual(["+Inf", 4]);
  });
});
