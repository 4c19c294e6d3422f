/**
 * A small metrics registry: counters, gauges and histograms keyed by label sets, a plain-data
 * snapshot that crosses RPC and storage, a merge of snapshots from several holders (the
 * JobExecutor shards), and a renderer to Prometheus' text exposition format 0.0.4. Pure; which
 * metrics exist is the caller's table (serving-metrics.ts).
 */
import { assert } from "../assert.ts";

export type MetricType = "counter" | "gauge" | "histogram";

/**
 * How one metric's series from several snapshots combine: "sum" adds them (counters and
 * histograms each holder counted itself), "latest" keeps the most recently set one (values an
 * instance reports about itself, which every holder sees a copy of).
 */
export type MergeRule = "sum" | "latest";

export interface MetricDef {
  name: string;
  help: string;
  type: MetricType;
  labelNames: readonly string[];
  merge: MergeRule;
  /** Histograms only: upper bounds, ascending (the +Inf bucket is implicit). */
  buckets?: readonly number[];
}

export type Labels = Readonly<Record<string, string>>;

/** A counter's or gauge's series; `at` is when it was last set (epoch ms). */
export interface ValueSample {
  labels: Labels;
  value: number;
  at: number;
}

/** A histogram's series: per-bucket counts (not cumulative; the last one is +Inf) and sum. */
export interface HistogramSample {
  labels: Labels;
  counts: number[];
  sum: number;
  at: number;
}

export type Sample = ValueSample | HistogramSample;

/** Every metric's series by metric name; plain data. */
export type MetricsSnapshot = Record<string, Sample[]>;

function isHistogramSample(s: Sample): s is HistogramSample {
  return "counts" in s;
}

function keyOf(def: MetricDef, labels: Labels): string {
  assert(
    Object.keys(labels).length === def.labelNames.length &&
      def.labelNames.every((n) => typeof labels[n] === "string"),
    `${def.name} takes labels ${def.labelNames.join(",")}`,
  );
  return JSON.stringify(def.labelNames.map((n) => labels[n]));
}

export class MetricsRegistry {
  readonly #defs = new Map<string, MetricDef>();
  readonly #series = new Map<string, Map<string, Sample>>();

  constructor(defs: readonly MetricDef[]) {
    for (const d of defs) {
      assert(d.type !== "histogram" || (d.buckets?.length ?? 0) > 0, `${d.name} needs buckets`);
      this.#defs.set(d.name, d);
      this.#series.set(d.name, new Map());
    }
  }

  #def(name: string, type: MetricType): MetricDef {
    const d = this.#defs.get(name);
    assert(d !== undefined && d.type === type, `no ${type} named ${name}`);
    return d;
  }

  #sample(d: MetricDef, labels: Labels): Sample | undefined {
    return this.#series.get(d.name)?.get(keyOf(d, labels));
  }

  #put(d: MetricDef, s: Sample): void {
    this.#series.get(d.name)?.set(keyOf(d, s.labels), s);
  }

  /** Adds `by` (>= 0) to a counter. */
  inc(name: string, labels: Labels, by = 1, at = 0): void {
    const d = this.#def(name, "counter");
    assert(by >= 0, `${name}: counters only go up`);
    const s = this.#sample(d, labels) as ValueSample | undefined;
    this.#put(d, { labels: { ...labels }, value: (s?.value ?? 0) + by, at });
  }

  /** Sets a gauge, or a counter whose running total is kept elsewhere (an instance's own). */
  set(name: string, labels: Labels, value: number, at: number): void {
    const d = this.#defs.get(name);
    assert(d !== undefined && d.type !== "histogram", `no counter or gauge named ${name}`);
    this.#put(d, { labels: { ...labels }, value, at });
  }

  /** Counts `value` into a histogram's bucket and sum. */
  observe(name: string, labels: Labels, value: number, at = 0): void {
    const d = this.#def(name, "histogram");
    const bounds = d.buckets ?? [];
    const s = (this.#sample(d, labels) as HistogramSample | undefined) ?? {
      labels: { ...labels },
      counts: new Array<number>(bounds.length + 1).fill(0),
      sum: 0,
      at,
    };
    const i = bounds.findIndex((b) => value <= b);
    const at1 = i === -1 ? bounds.length : i;
    s.counts[at1] = (s.counts[at1] ?? 0) + 1;
    s.sum += value;
    s.at = at;
    this.#put(d, s);
  }

  /** The current series as plain data (copies). */
  snapshot(): MetricsSnapshot {
    const out: MetricsSnapshot = {};
    for (const [name, series] of this.#series) {
      out[name] = [...series.values()].map((s) =>
        isHistogramSample(s) ? { ...s, counts: [...s.counts] } : { ...s },
      );
    }
    return out;
  }

  /**
   * Replaces the series with a snapshot's. Series that no longer fit their definition (a metric
   * dropped, labels or buckets changed since the snapshot was written) are dropped, not fatal.
   */
  restore(snap: MetricsSnapshot): void {
    for (const [name, series] of this.#series) {
      series.clear();
      const d = this.#defs.get(name);
      for (const s of snap[name] ?? []) if (d && fits(d, s)) this.#put(d, s);
    }
  }
}

/** Whether a stored series matches its metric's current labels, type and buckets. */
function fits(d: MetricDef, s: Sample): boolean {
  const names = Object.keys(s.labels);
  if (names.length !== d.labelNames.length) return false;
  if (!d.labelNames.every((n) => typeof s.labels[n] === "string")) return false;
  if (d.type !== "histogram") return !isHistogramSample(s);
  return isHistogramSample(s) && s.counts.length === (d.buckets?.length ?? 0) + 1;
}

/** One snapshot from several: each metric's series combined by its `merge` rule. */
export function mergeSnapshots(
  defs: readonly MetricDef[],
  snaps: readonly MetricsSnapshot[],
): MetricsSnapshot {
  const out: MetricsSnapshot = {};
  for (const d of defs) {
    const byKey = new Map<string, Sample>();
    for (const snap of snaps) {
      for (const s of snap[d.name] ?? []) {
        if (!fits(d, s)) continue; // written by another version (a deploy rolling out)
        const key = keyOf(d, s.labels);
        const prev = byKey.get(key);
        byKey.set(key, prev ? combine(d.merge, prev, s) : s);
      }
    }
    out[d.name] = [...byKey.values()];
  }
  return out;
}

function combine(rule: MergeRule, a: Sample, b: Sample): Sample {
  if (rule === "latest") return b.at > a.at ? b : a;
  const at = Math.max(a.at, b.at);
  if (isHistogramSample(a) && isHistogramSample(b)) {
    return {
      labels: a.labels,
      counts: a.counts.map((c, i) => c + (b.counts[i] ?? 0)),
      sum: a.sum + b.sum,
      at,
    };
  }
  assert(!isHistogramSample(a) && !isHistogramSample(b), "a metric's series share one type");
  return { labels: a.labels, value: a.value + b.value, at };
}

// --- the text exposition format 0.0.4

export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

function escapeHelp(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabel(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** A sample value: integers as they are, +Inf/-Inf/NaN as Prometheus spells them. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const pairs = Object.entries(labels);
  if (extra) pairs.push(extra);
  if (pairs.length === 0) return "";
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
}

/** The snapshot in Prometheus' text format, metrics in `defs` order, each with HELP and TYPE. */
export function renderPrometheus(defs: readonly MetricDef[], snap: MetricsSnapshot): string {
  const lines: string[] = [];
  for (const d of defs) {
    lines.push(`# HELP ${d.name} ${escapeHelp(d.help)}`, `# TYPE ${d.name} ${d.type}`);
    for (const s of snap[d.name] ?? []) {
      if (!isHistogramSample(s)) {
        lines.push(`${d.name}${labelText(s.labels)} ${formatValue(s.value)}`);
        continue;
      }
      const bounds = [...(d.buckets ?? []), Number.POSITIVE_INFINITY];
      let cumulative = 0;
      bounds.forEach((b, i) => {
        cumulative += s.counts[i] ?? 0;
        lines.push(`${d.name}_bucket${labelText(s.labels, ["le", formatValue(b)])} ${cumulative}`);
      });
      lines.push(`${d.name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
      lines.push(`${d.name}_count${labelText(s.labels)} ${cumulative}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
