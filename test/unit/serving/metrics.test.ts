/** The metrics registry: counters, gauges and histograms by label set, merge, and the text format. */
import parsePrometheus from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import {
  formatValue,
  type MetricDef,
  MetricsRegistry,
  mergeSnapshots,
  renderPrometheus,
} from "../../../shared/serving/metrics.ts";

const DEFS: MetricDef[] = [
  {
    name: "t:requests_total",
    help: "Requests.",
    type: "counter",
    labelNames: ["model"],
    merge: "sum",
  },
  { name: "t:load", help: "Load.", type: "gauge", labelNames: ["instance_id"], merge: "latest" },
  {
    name: "t:latency_seconds",
    help: "Latency.",
    type: "histogram",
    labelNames: ["model"],
    merge: "sum",
    buckets: [0.1, 1],
  },
];

describe("MetricsRegistry", () => {
  it("keeps one series per label set", () => {
    const r = new MetricsRegistry(DEFS);
    r.inc("t:requests_total", { model: "a" });
    r.inc("t:requests_total", { model: "a" }, 2);
    r.inc("t:requests_total", { model: "b" });
    expect(
      r.snapshot()["t:requests_total"]?.map((s) => [s.labels.model, "value" in s && s.value]),
    ).toEqual([
      ["a", 3],
      ["b", 1],
    ]);
  });

  it("counts observations into their bucket (bounds inclusive) and +Inf", () => {
    const r = new MetricsRegistry(DEFS);
    for (const v of [0.05, 0.1, 0.5, 1, 3]) r.observe("t:latency_seconds", { model: "a" }, v);
    const [s] = r.snapshot()["t:latency_seconds"] ?? [];
    expect(s && "counts" in s && s.counts).toEqual([2, 2, 1]);
    expect(s && "sum" in s && s.sum).toBeCloseTo(4.65, 10);
  });

  it("refuses unknown metrics, wrong types, missing labels and decreasing counters", () => {
    const r = new MetricsRegistry(DEFS);
    expect(() => r.inc("t:nope", {})).toThrow();
    expect(() => r.inc("t:load", { instance_id: "i" })).toThrow();
    expect(() => r.observe("t:requests_total", { model: "a" }, 1)).toThrow();
    expect(() => r.inc("t:requests_total", {})).toThrow();
    expect(() => r.inc("t:requests_total", { model: "a", extra: "x" })).toThrow();
    expect(() => r.inc("t:requests_total", { model: "a" }, -1)).toThrow();
  });

  it("restores a snapshot", () => {
    const r = new MetricsRegistry(DEFS);
    r.inc("t:requests_total", { model: "a" }, 4);
    r.observe("t:latency_seconds", { model: "a" }, 0.2);
    const copy = new MetricsRegistry(DEFS);
    copy.restore(JSON.parse(JSON.stringify(r.snapshot())));
    copy.inc("t:requests_total", { model: "a" });
    expect(renderPrometheus(DEFS, copy.snapshot())).toContain('t:requests_total{model="a"} 5');
    expect(renderPrometheus(DEFS, copy.snapshot())).toContain(
      't:latency_seconds_count{model="a"} 1',
    );
  });
});

describe("mergeSnapshots", () => {
  it("sums counters and histograms and keeps the latest gauge", () => {
    const a = new MetricsRegistry(DEFS);
    const b = new MetricsRegistry(DEFS);
    a.inc("t:requests_total", { model: "m" }, 2);
    b.inc("t:requests_total", { model: "m" }, 3);
    b.inc("t:requests_total", { model: "n" }, 1);
    a.observe("t:latency_seconds", { model: "m" }, 0.05);
    b.observe("t:latency_seconds", { model: "m" }, 2);
    a.set("t:load", { instance_id: "i" }, 7, 200);
    b.set("t:load", { instance_id: "i" }, 4, 100);
    const text = renderPrometheus(DEFS, mergeSnapshots(DEFS, [a.snapshot(), b.snapshot()]));
    expect(text).toContain('t:requests_total{model="m"} 5');
    expect(text).toContain('t:requests_total{model="n"} 1');
    expect(text).toContain('t:load{instance_id="i"} 7');
    expect(text).toContain('t:latency_seconds_bucket{model="m",le="0.1"} 1');
    expect(text).toContain('t:latency_seconds_bucket{model="m",le="+Inf"} 2');
    expect(text).toContain('t:latency_seconds_sum{model="m"} 2.05');
  });
});

describe("renderPrometheus", () => {
  it("writes HELP, TYPE, cumulative buckets, _sum and _count", () => {
    const r = new MetricsRegistry(DEFS);
    r.inc("t:requests_total", { model: "a" });
    r.observe("t:latency_seconds", { model: "a" }, 0.5);
    r.observe("t:latency_seconds", { model: "a" }, 0.05);
    expect(renderPrometheus(DEFS, r.snapshot())).toBe(
      [
        "# HELP t:requests_total Requests.",
        "# TYPE t:requests_total counter",
        't:requests_total{model="a"} 1',
        "# HELP t:load Load.",
        "# TYPE t:load gauge",
        "# HELP t:latency_seconds Latency.",
        "# TYPE t:latency_seconds histogram",
        't:latency_seconds_bucket{model="a",le="0.1"} 1',
        't:latency_seconds_bucket{model="a",le="1"} 2',
        't:latency_seconds_bucket{model="a",le="+Inf"} 2',
        't:latency_seconds_sum{model="a"} 0.55',
        't:latency_seconds_count{model="a"} 2',
        "",
      ].join("\n"),
    );
  });

  it("escapes label values so a real parser reads them back", () => {
    const r = new MetricsRegistry(DEFS);
    const odd = 'a "quoted" \\ back\nslash';
    r.inc("t:requests_total", { model: odd });
    const parsed = parsePrometheus(renderPrometheus(DEFS, r.snapshot()));
    const family = parsed.find((f) => f.name === "t:requests_total");
    expect(family?.type).toBe("COUNTER");
    expect(family?.metrics).toEqual([{ value: "1", labels: { model: odd } }]);
  });

  it("spells infinities and NaN as Prometheus does", () => {
    expect([Infinity, -Infinity, Number.NaN, 0.25, 3].map(formatValue)).toEqual([
      "+Inf",
      "-Inf",
      "NaN",
      "0.25",
      "3",
    ]);
  });
});
