/**
 * The dashboard's view of GET /metrics: parses the lines the server renders (Prometheus text
 * format 0.0.4), and from two scrapes computes rates from counter deltas and quantiles from
 * histogram bucket deltas, the way Prometheus' `rate` and `histogram_quantile` do. Pure; no I/O.
 */

export interface PromSample {
  /** The line's metric name, with `_bucket`, `_sum` or `_count` for histogram lines. */
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** One scrape: its samples and when it was taken (epoch ms). */
export interface Scrape {
  at: number;
  samples: PromSample[];
}

/** A cumulative histogram bucket: `count` observations were at most `le`. */
export interface Bucket {
  le: number;
  count: number;
}

const LINE_RE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL_RE = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseNumber(s: string): number {
  if (s === "+Inf" || s === "Inf") return Number.POSITIVE_INFINITY;
  if (s === "-Inf") return Number.NEGATIVE_INFINITY;
  return Number(s); // "NaN" parses to NaN
}

function unescapeLabel(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
}

/** The samples of a text-format body; comments, blank and malformed lines are skipped. */
export function parsePrometheusText(text: string): PromSample[] {
  const out: PromSample[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = LINE_RE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(LABEL_RE)) {
      labels[l[1] as string] = unescapeLabel(l[2] as string);
    }
    out.push({ name: m[1] as string, labels, value: parseNumber(m[3] as string) });
  }
  return out;
}

function matches(s: PromSample, where: Record<string, string>): boolean {
  return Object.entries(where).every(([k, v]) => s.labels[k] === v);
}

/** The sum of a counter's (or gauge's) series whose labels include `where`. */
export function sumOf(
  samples: readonly PromSample[],
  name: string,
  where: Record<string, string> = {},
): number {
  let total = 0;
  for (const s of samples) if (s.name === name && matches(s, where)) total += s.value;
  return total;
}

/**
 * A histogram's cumulative buckets, summed over its series whose labels include `where` (every
 * model, by default), sorted by bound.
 */
export function bucketsOf(
  samples: readonly PromSample[],
  name: string,
  where: Record<string, string> = {},
): Bucket[] {
  const byLe = new Map<number, number>();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !matches(s, where) || s.labels.le === undefined) continue;
    const le = parseNumber(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return [...byLe.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
}

/**
 * The observations between two scrapes' cumulative buckets. A bucket that went down means the
 * counters restarted; then `cur` itself is the delta, as Prometheus treats a counter reset.
 */
export function bucketDelta(prev: readonly Bucket[], cur: readonly Bucket[]): Bucket[] {
  const before = new Map(prev.map((b) => [b.le, b.count]));
  const reset = cur.some((b) => b.count < (before.get(b.le) ?? 0));
  return cur.map((b) => ({ le: b.le, count: reset ? b.count : b.count - (before.get(b.le) ?? 0) }));
}

/**
 * Prometheus' histogram_quantile over cumulative buckets: the bucket holding rank q * total, with
 * linear interpolation inside it (the lowest bucket starts at 0 when its bound is positive). A
 * rank in the +Inf bucket answers the highest finite bound. NaN when there are no observations.
 */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number {
  const last = buckets[buckets.length - 1];
  if (!last || last.le !== Number.POSITIVE_INFINITY || last.count <= 0) return Number.NaN;
  if (q <= 0) return q < 0 ? Number.NEGATIVE_INFINITY : 0;
  if (q >= 1) return q > 1 ? Number.POSITIVE_INFINITY : (buckets[buckets.length - 2]?.le ?? 0);
  const rank = q * last.count;
  const i = buckets.findIndex((b) => b.count >= rank);
  const b = buckets[i] as Bucket;
  if (b.le === Number.POSITIVE_INFINITY) return buckets[i - 1]?.le ?? 0;
  const lower = i === 0 ? Math.min(b.le, 0) : (buckets[i - 1] as Bucket).le;
  const below = i === 0 ? 0 : (buckets[i - 1] as Bucket).count;
  const inBucket = b.count - below;
  if (inBucket <= 0) return b.le;
  return lower + (b.le - lower) * ((rank - below) / inBucket);
}

/** Per-second increase of a counter between two scrapes (a decrease counts as a restart). */
export function ratePerSecond(
  prev: Scrape,
  cur: Scrape,
  name: string,
  where: Record<string, string> = {},
): number {
  const dtS = (cur.at - prev.at) / 1000;
  if (dtS <= 0) return 0;
  const a = sumOf(prev.samples, name, where);
  const b = sumOf(cur.samples, name, where);
  return (b >= a ? b - a : b) / dtS;
}

/** The q-quantile of a histogram's observations between two scrapes (NaN if none). */
export function windowQuantile(prev: Scrape, cur: Scrape, name: string, q: number): number {
  return histogramQuantile(
    q,
    bucketDelta(bucketsOf(prev.samples, name), bucketsOf(cur.samples, name)),
  );
}

/** Plot-ready series: x in epoch seconds, one y array per line; null where there is no value. */
export interface ChartSeries {
  t: number[];
  values: Record<string, (number | null)[]>;
}

/** What one chart line shows. */
export type SeriesSpec =
  | { key: string; kind: "rate"; metric: string }
  | { key: string; kind: "quantile"; metric: string; q: number };

/**
 * One point per scrape after the first: rates over the step since the previous scrape, quantiles
 * over the observations in the last `windowMs` (from the oldest scrape inside the window).
 */
export function chartSeries(
  history: readonly Scrape[],
  specs: readonly SeriesSpec[],
  windowMs: number,
): ChartSeries {
  const t: number[] = [];
  const values: Record<string, (number | null)[]> = {};
  for (const s of specs) values[s.key] = [];
  for (let i = 1; i < history.length; i++) {
    const cur = history[i] as Scrape;
    const prev = history[i - 1] as Scrape;
    let j = i - 1;
    while (j > 0 && cur.at - (history[j - 1] as Scrape).at <= windowMs) j--;
    const from = history[j] as Scrape;
    t.push(cur.at / 1000);
    for (const s of specs) {
      const v =
        s.kind === "rate"
          ? ratePerSecond(prev, cur, s.metric)
          : windowQuantile(from, cur, s.metric, s.q);
      values[s.key]?.push(Number.isFinite(v) ? v : null);
    }
  }
  return { t, values };
}

/** Keeps the scrapes of the last `keepMs` (and at least the newest one). */
export function trimHistory(history: readonly Scrape[], keepMs: number): Scrape[] {
  const newest = history[history.length - 1];
  if (!newest) return [];
  return history.filter((s) => newest.at - s.at <= keepMs);
}
