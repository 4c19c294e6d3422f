/**
 * Workload traces for the trace-replay serving benchmark (`bench/serve.ts`): reading the Azure
 * LLM inference trace CSV and the Mooncake JSONL formats (streamed line by line), scaling their
 * token lengths down to a small model's context, turning a request into an exact-length token-id
 * prompt (Mooncake hash ids become fixed blocks of ids, so shared prefixes stay shared), seeded
 * Poisson arrivals, percentiles and an incremental SSE parser. No Workers APIs; `node:` only in
 * the file reader.
 *
 * Scaling rule (`scaleFactor`, `scaleLengths`, `scaledBlockTokens`):
 * - factor s = min(1, ctx / p99(input + output)) over every row of the trace (linear-interpolated
 *   p99), unless the caller overrides it;
 * - input' = max(1, round(input * s)), output' = max(1, round(output * s)); a row whose scaled
 *   total still exceeds ctx (the tail above p99) is shrunk by ctx / (input' + output'), keeping its
 *   input/output ratio, with input' in [1, ctx - 1] and output' in [1, ctx - input'], so
 *   input' + output' <= ctx always;
 * - a trace block (Mooncake: 512 tokens per hash id) becomes blockTokens = 16 * max(1,
 *   round(512 * s / 16)) tokens: the nearest multiple of the server's 16-token KV block, at least
 *   one KV block, so a shared scaled prefix is a whole number of cacheable blocks. When 512 * s is
 *   under 8 this overstates the shared fraction of a prompt (it is reported next to the results).
 *
 * Prompts (`promptTokenIds`): ids in [3, vocab - 1] (0, 1 and 2 are unk/BOS/EOS in the local
 * models; the server prepends nothing to token-id prompts). A request with hash ids is the
 * concatenation of its blocks, cut to input' tokens, padded with request-unique ids if shorter;
 * a request without hash ids is input' request-unique ids. Block ids depend only on (hash id,
 * salt), request-unique ids only on (request index, salt); the salt lets a run start cache-cold
 * on a server that saw an earlier run.
 */
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";

export type TraceFormat = "azure" | "mooncake";

export interface TraceRow {
  /** Arrival time in ms (Azure: since the Unix epoch, UTC; Mooncake: as in the file). */
  timestampMs: number;
  inputLength: number;
  outputLength: number;
  /** Mooncake: one id per trace block of the prompt; equal ids mean a shared prefix. */
  hashIds?: number[];
}

/** Tokens per hash id in the Mooncake traces. */
export const MOONCAKE_BLOCK_SIZE = 512;
/** The server's KV block (prefix-cache granularity), in tokens. */
export const KV_BLOCK_TOKENS = 16;
/** The lowest token id a prompt uses (0, 1, 2: unk, BOS, EOS). */
export const FIRST_SAFE_TOKEN_ID = 3;

// ---------------------------------------------------------------------------------------------
// Parsing

export class TraceParseError extends Error {}

/** The format from the file name, else from the first non-empty line. */
export function detectFormat(path: string, firstLine: string): TraceFormat {
  if (/\.csv$/i.test(path)) return "azure";
  if (/\.jsonl?$/i.test(path)) return "mooncake";
  return firstLine.trimStart().startsWith("{") ? "mooncake" : "azure";
}

/**
 * "2023-11-16 18:17:03.9799600" (also with "T", fewer fraction digits, or a trailing "Z") as ms
 * since the epoch, UTC, keeping the sub-millisecond fraction.
 */
export function parseAzureTimestamp(s: string): number {
  const m = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?Z?$/.exec(s.trim());
  if (!m) throw new TraceParseError(`bad timestamp "${s}"`);
  const [, y, mo, d, h, mi, sec, frac] = m;
  const whole = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec));
  return whole + (frac ? Number(`0.${frac}`) * 1000 : 0);
}

function nonNegativeInt(v: unknown, what: string): number {
  const n = typeof v === "string" ? Number(v.trim()) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0) {
    throw new TraceParseError(`${what} must be a non-negative integer, got ${JSON.stringify(v)}`);
  }
  return n;
}

/**
 * A line parser for one format: feed it every line in order; it returns a row, or null for a
 * blank line or the CSV header. Malformed lines throw TraceParseError naming the line.
 */
export function lineParser(format: TraceFormat): (line: string) => TraceRow | null {
  let lineNo = 0;
  if (format === "mooncake") {
    return (line) => {
      lineNo++;
      const text = line.trim();
      if (text === "") return null;
      try {
        const o = JSON.parse(text) as Record<string, unknown>;
        const ts = o.timestamp;
        if (typeof ts !== "number" || !Number.isFinite(ts) || ts < 0) {
          throw new TraceParseError(`timestamp must be a non-negative number, got ${String(ts)}`);
        }
        const row: TraceRow = {
          timestampMs: ts,
          inputLength: nonNegativeInt(o.input_length, "input_length"),
          outputLength: nonNegativeInt(o.output_length, "output_length"),
        };
        if (o.hash_ids !== undefined) {
          if (!Array.isArray(o.hash_ids)) throw new TraceParseError("hash_ids must be an array");
          row.hashIds = o.hash_ids.map((h) => nonNegativeInt(h, "hash id"));
        }
        return row;
      } catch (e) {
        throw new TraceParseError(`mooncake line ${lineNo}: ${(e as Error).message}`);
      }
    };
  }
  // Azure CSV: TIMESTAMP,ContextTokens,GeneratedTokens (columns found by name in the header).
  let cols: [number, number, number] | null = null;
  return (line) => {
    lineNo++;
    const text = line.trim();
    if (text === "") return null;
    const fields = text.split(",").map((f) => f.trim().replace(/^"(.*)"$/, "$1"));
    if (cols === null) {
      const lower = fields.map((f) => f.toLowerCase());
      const ts = lower.indexOf("timestamp");
      const ctx = lower.indexOf("contexttokens");
      const gen = lower.indexOf("generatedtokens");
      if (ts >= 0 && ctx >= 0 && gen >= 0) {
        cols = [ts, ctx, gen];
        return null;
      }
      if (lower.some((f) => /[a-z]/.test(f) && !/^\d{4}-/.test(f))) {
        throw new TraceParseError(
          `azure line ${lineNo}: expected a TIMESTAMP,ContextTokens,GeneratedTokens header`,
        );
      }
      cols = [0, 1, 2]; // no header: positional
    }
    try {
      return {
        timestampMs: parseAzureTimestamp(fields[cols[0]] ?? ""),
        inputLength: nonNegativeInt(fields[cols[1]], "ContextTokens"),
        outputLength: nonNegativeInt(fields[cols[2]], "GeneratedTokens"),
      };
    } catch (e) {
      throw new TraceParseError(`azure line ${lineNo}: ${(e as Error).message}`);
    }
  };
}

/** Every row of a trace held in memory as text (tests, small inputs). */
export function parseTraceText(text: string, format: TraceFormat): TraceRow[] {
  const parse = lineParser(format);
  const rows: TraceRow[] = [];
  for (const line of text.split("\n")) {
    const r = parse(line);
    if (r) rows.push(r);
  }
  return rows;
}

/** The first non-empty line of a file (format sniffing), read without loading the file. */
async function firstLine(path: string): Promise<string> {
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  try {
    for await (const line of rl) if (line.trim() !== "") return line;
    return "";
  } finally {
    rl.close();
  }
}

/** Rows of a trace file, streamed. */
export async function* readTraceRows(path: string, format: TraceFormat): AsyncGenerator<TraceRow> {
  const parse = lineParser(format);
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  try {
    for await (const line of rl) {
      const r = parse(line);
      if (r) yield r;
    }
  } finally {
    rl.close();
  }
}

export interface LoadedTrace {
  format: TraceFormat;
  /** Rows in the file. */
  numRows: number;
  /** p99 of input + output over every row. */
  p99TotalTokens: number;
  /** Last row's time minus the first row's, ms. */
  spanMs: number;
  /** The rows `keep` accepted, in file order, with their index in the file. */
  rows: (TraceRow & { rowIndex: number })[];
}

/**
 * Streams a trace once: keeps the totals of every row (4 bytes each) for the p99, and the full
 * rows that `keep(rowIndex, msSinceFirstRow)` accepts.
 */
export async function loadTrace(
  path: string,
  keep: (rowIndex: number, relMs: number) => boolean,
  format?: TraceFormat,
): Promise<LoadedTrace> {
  const fmt = format ?? detectFormat(path, await firstLine(path));
  let totals = new Int32Array(1024);
  let n = 0;
  let first = Number.NaN;
  let last = Number.NaN;
  const rows: LoadedTrace["rows"] = [];
  for await (const r of readTraceRows(path, fmt)) {
    if (n === totals.length) {
      const grown = new Int32Array(totals.length * 2);
      grown.set(totals);
      totals = grown;
    }
    totals[n] = Math.min(r.inputLength + r.outputLength, 0x7fffffff);
    if (n === 0) first = r.timestampMs;
    last = r.timestampMs;
    if (keep(n, r.timestampMs - first)) rows.push({ ...r, rowIndex: n });
    n++;
  }
  if (n === 0) throw new TraceParseError(`${path}: no rows`);
  const sorted = Float64Array.from(totals.subarray(0, n)).sort();
  return {
    format: fmt,
    numRows: n,
    p99TotalTokens: percentileSorted(sorted, 99),
    spanMs: last - first,
    rows,
  };
}

// ---------------------------------------------------------------------------------------------
// Scaling

/** min(1, ctx / p99 of input + output). */
export function scaleFactor(p99TotalTokens: number, ctx: number): number {
  if (!(p99TotalTokens > 0)) return 1;
  return Math.min(1, ctx / p99TotalTokens);
}

/** One row's lengths scaled by `factor` into a context of `ctx` tokens (see the file comment). */
export function scaleLengths(
  inputLength: number,
  outputLength: number,
  factor: number,
  ctx: number,
): { input: number; output: number } {
  if (!Number.isInteger(ctx) || ctx < 2) throw new RangeError(`ctx must be >= 2, got ${ctx}`);
  let input = Math.max(1, Math.round(inputLength * factor));
  let output = Math.max(1, Math.round(outputLength * factor));
  if (input + output > ctx) {
    const r = ctx / (input + output);
    input = Math.min(ctx - 1, Math.max(1, Math.floor(input * r)));
    output = Math.min(ctx - input, Math.max(1, Math.floor(output * r)));
  }
  return { input, output };
}

/** A trace block of `traceBlockSize` tokens scaled by `factor`, rounded to whole KV blocks. */
export function scaledBlockTokens(
  traceBlockSize: number,
  factor: number,
  kvBlock = KV_BLOCK_TOKENS,
): number {
  return kvBlock * Math.max(1, Math.round((traceBlockSize * factor) / kvBlock));
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness and prompts

/** murmur3's 32-bit finaliser. */
function fmix32(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** A 32-bit seed from a list of non-negative integers (each up to 2^53). */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    const lo = p >>> 0;
    const hi = Math.floor(p / 0x100000000) >>> 0;
    h = fmix32(h ^ lo) + 0x7f4a7c15;
    h = fmix32(h ^ hi);
  }
  return h >>> 0;
}

/** mulberry32: uniform floats in [0, 1) from a 32-bit seed. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

const DOMAIN_BLOCK = 1;
const DOMAIN_REQUEST = 2;

function fillIds(out: number[], count: number, rng: Rng, vocab: number): void {
  const span = vocab - FIRST_SAFE_TOKEN_ID;
  for (let i = 0; i < count; i++) out.push(FIRST_SAFE_TOKEN_ID + Math.floor(rng.next() * span));
}

function checkVocab(vocab: number): void {
  if (!Number.isInteger(vocab) || vocab <= FIRST_SAFE_TOKEN_ID) {
    throw new RangeError(`vocab must be an integer above ${FIRST_SAFE_TOKEN_ID}, got ${vocab}`);
  }
}

/** The fixed token ids of one hash id's block: a function of (hash id, salt) only. */
export function blockTokenIds(hashId: number, blockTokens: number, vocab: number, salt = 0) {
  checkVocab(vocab);
  const out: number[] = [];
  fillIds(out, blockTokens, new Rng(mixSeed(DOMAIN_BLOCK, salt, hashId)), vocab);
  return out;
}

export interface PromptOptions {
  blockTokens: number;
  vocab: number;
  salt?: number;
}

/**
 * Exactly `inputLength` token ids for request number `requestIndex`: its hash-id blocks (cut to
 * length) then request-unique ids.
 */
export function promptTokenIds(
  req: { requestIndex: number; inputLength: number; hashIds?: readonly number[] },
  opts: PromptOptions,
): number[] {
  checkVocab(opts.vocab);
  const salt = opts.salt ?? 0;
  const out: number[] = [];
  for (const h of req.hashIds ?? []) {
    if (out.length >= req.inputLength) break;
    const block = blockTokenIds(h, opts.blockTokens, opts.vocab, salt);
    for (const id of block) {
      if (out.length >= req.inputLength) break;
      out.push(id);
    }
  }
  if (out.length < req.inputLength) {
    const rng = new Rng(mixSeed(DOMAIN_REQUEST, salt, req.requestIndex));
    fillIds(out, req.inputLength - out.length, rng, opts.vocab);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Arrivals

/**
 * Poisson arrival times in ms from 0 at `rate` per second (exponential gaps from a seeded
 * generator): all arrivals before `durationMs`, at most `maxCount` of them.
 */
export function poissonArrivals(
  rate: number,
  seed: number,
  durationMs: number,
  maxCount = Number.POSITIVE_INFINITY,
): number[] {
  if (!(rate > 0) || !Number.isFinite(rate)) throw new RangeError(`rate must be > 0, got ${rate}`);
  if (!Number.isFinite(durationMs) && !Number.isFinite(maxCount)) {
    throw new RangeError("poissonArrivals needs a finite duration or count");
  }
  const rng = new Rng(mixSeed(seed));
  const out: number[] = [];
  let t = 0;
  while (out.length < maxCount) {
    t += (-Math.log(1 - rng.next()) / rate) * 1000;
    if (t >= durationMs) break;
    out.push(t);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Statistics

/** The p-th percentile (0..100) of ascending values, linearly interpolated (numpy's default). */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const rank = (Math.min(100, Math.max(0, p)) / 100) * (n - 1);
  const lo = Math.floor(rank);
  const hi = Math.min(n - 1, lo + 1);
  const a = sorted[lo] as number;
  const b = sorted[hi] as number;
  return a + (b - a) * (rank - lo);
}

/** The p-th percentile of values in any order. */
export function percentile(values: readonly number[], p: number): number {
  return percentileSorted(
    [...values].sort((a, b) => a - b),
    p,
  );
}

export interface Percentiles {
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

/** p50/p90/p99 rounded to `digits` decimals; nulls when there are no values. */
export function summarize(values: readonly number[], digits = 1): Percentiles {
  if (values.length === 0) return { p50: null, p90: null, p99: null };
  const s = [...values].sort((a, b) => a - b);
  const r = (p: number) => Number(percentileSorted(s, p).toFixed(digits));
  return { p50: r(50), p90: r(90), p99: r(99) };
}

// ---------------------------------------------------------------------------------------------
// Server-sent events

/**
 * Incremental SSE parser: push decoded text as it arrives, get back the data payload of every
 * event completed so far (multi-line data joined with "\n"; comments and other fields skipped;
 * CRLF, CR and LF line ends).
 */
export class SseParser {
  private buf = "";
  private data: string[] = [];
  /** The last text ended with CR: an LF that starts the next text belongs to it. */
  private afterCr = false;

  push(text: string): string[] {
    if (this.afterCr && text.startsWith("\n")) text = text.slice(1);
    this.afterCr = false;
    this.buf += text;
    const out: string[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buf);
      if (!m) break;
      const line = this.buf.slice(0, m.index);
      this.buf = this.buf.slice(m.index + m[0].length);
      if (m[0] === "\r" && this.buf === "") this.afterCr = true;
      if (line === "") {
        if (this.data.length > 0) out.push(this.data.join("\n"));
        this.data = [];
      } else if (line.startsWith("data:")) {
        this.data.push(line.slice(5).replace(/^ /, ""));
      } else if (line === "data") {
        this.data.push("");
      }
    }
    return out;
  }
}
