import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import {
  blockTokenIds,
  detectFormat,
  FIRST_SAFE_TOKEN_ID,
  lineParser,
  loadTrace,
  parseAzureTimestamp,
  parseTraceText,
  percentile,
  poissonArrivals,
  promptTokenIds,
  SseParser,
  scaledBlockTokens,
  scaleFactor,
  scaleLengths,
  summarize,
  TraceParseError,
} from "../../../bench/traces.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

const TRACES = resolve(REPO_ROOT, "../shared/traces");
const HAVE_TRACES = existsSync(join(TRACES, "mooncake-conversation.jsonl"));

const AZURE = [
  "TIMESTAMP,ContextTokens,GeneratedTokens",
  "2023-11-16 18:17:03.9799600,4808,10",
  "2023-11-16 18:17:04.0319600,3180,8",
  "2023-11-16 18:17:05.5,110,27",
  "",
].join("\r\n");

const MOONCAKE = [
  '{"timestamp": 0, "input_length": 6758, "output_length": 500, "hash_ids": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]}',
  '{"timestamp": 0, "input_length": 7322, "output_length": 490, "hash_ids": [0, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27]}',
  '{"timestamp": 1500, "input_length": 600, "output_length": 20, "hash_ids": [0, 14]}',
  "",
].join("\n");

describe("trace parsing", () => {
  it("reads the Azure CSV format (CRLF, header by name, sub-ms timestamps)", () => {
    const rows = parseTraceText(AZURE, "azure");
    expect(rows.map((r) => [r.inputLength, r.outputLength])).toEqual([
      [4808, 10],
      [3180, 8],
      [110, 27],
    ]);
    expect(rows[0]?.timestampMs).toBe(Date.UTC(2023, 10, 16, 18, 17, 3) + 979.96);
    expect((rows[1]?.timestampMs ?? 0) - (rows[0]?.timestampMs ?? 0)).toBeCloseTo(52, 3);
    expect((rows[2]?.timestampMs ?? 0) - (rows[0]?.timestampMs ?? 0)).toBeCloseTo(1520.04, 3);
    expect(rows[0]?.hashIds).toBeUndefined();
  });

  it("finds Azure columns by name in any order, and reads headerless files positionally", () => {
    const swapped = "GeneratedTokens,TIMESTAMP,ContextTokens\n5,2023-11-16 18:17:03,100\n";
    expect(parseTraceText(swapped, "azure")).toEqual([
      { timestampMs: Date.UTC(2023, 10, 16, 18, 17, 3), inputLength: 100, outputLength: 5 },
    ]);
    const bare = "2023-11-16 18:17:03.25,7,3\n";
    expect(parseTraceText(bare, "azure")[0]?.inputLength).toBe(7);
  });

  it("reads the Mooncake JSONL format with hash ids", () => {
    const rows = parseTraceText(MOONCAKE, "mooncake");
    expect(rows).toHaveLength(3);
    expect(rows[1]).toEqual({
      timestampMs: 0,
      inputLength: 7322,
      outputLength: 490,
      hashIds: [0, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27],
    });
    expect(rows[2]?.timestampMs).toBe(1500);
  });

  it("names the line of a malformed row", () => {
    expect(() =>
      parseTraceText("TIMESTAMP,ContextTokens,GeneratedTokens\nx,1,2\n", "azure"),
    ).toThrow(/azure line 2: bad timestamp/);
    expect(() =>
      parseTraceText('{"timestamp":0,"input_length":-1,"output_length":2}', "mooncake"),
    ).toThrow(TraceParseError);
    const parse = lineParser("mooncake");
    expect(parse("")).toBeNull();
    expect(() => parse("{not json")).toThrow(/mooncake line 2/);
  });

  it("detects the format from the name or the first line", () => {
    expect(detectFormat("a.csv", "{")).toBe("azure");
    expect(detectFormat("a.jsonl", "TIMESTAMP")).toBe("mooncake");
    expect(detectFormat("trace", '{"timestamp": 0}')).toBe("mooncake");
    expect(detectFormat("trace", "TIMESTAMP,ContextTokens,GeneratedTokens")).toBe("azure");
  });

  it("parses timestamps with a T, Z or no fraction", () => {
    expect(parseAzureTimestamp("2024-05-10T00:00:01.5Z")).toBe(Date.UTC(2024, 4, 10, 0, 0, 1, 500));
    expect(parseAzureTimestamp("2024-05-10 00:00:01")).toBe(Date.UTC(2024, 4, 10, 0, 0, 1));
  });

  it("streams a file, keeping only the selected rows but the p99 of all of them", async () => {
    const dir = mkdtempSync(join(tmpdir(), "traces-test-"));
    const path = join(dir, "t.jsonl");
    writeFileSync(path, MOONCAKE);
    const t = await loadTrace(path, (_i, relMs) => relMs < 1000);
    expect(t.format).toBe("mooncake");
    expect(t.numRows).toBe(3);
    expect(t.rows.map((r) => r.rowIndex)).toEqual([0, 1]);
    expect(t.spanMs).toBe(1500);
    expect(t.p99TotalTokens).toBeCloseTo(percentile([7258, 7812, 620], 99), 9);
  });
});

describe.skipIf(!HAVE_TRACES)("the shared sample traces", () => {
  it("reads azure-llm-2023-code.csv", async () => {
    const t = await loadTrace(join(TRACES, "azure-llm-2023-code.csv"), (i) => i < 2);
    expect(t.format).toBe("azure");
    expect(t.numRows).toBeGreaterThan(8000);
    expect(t.rows[0]).toMatchObject({ inputLength: 4808, outputLength: 10 });
    expect(t.spanMs).toBeGreaterThan(50 * 60_000);
  });

  it("reads azure-llm-2023-conv.csv", async () => {
    const t = await loadTrace(join(TRACES, "azure-llm-2023-conv.csv"), (i) => i < 1);
    expect(t.numRows).toBeGreaterThan(19_000);
    expect(t.rows[0]).toMatchObject({ inputLength: 374, outputLength: 44 });
  });

  it("reads mooncake-conversation.jsonl: one hash id per 512-token block", async () => {
    const t = await loadTrace(join(TRACES, "mooncake-conversation.jsonl"), () => true);
    expect(t.numRows).toBeGreaterThan(12_000);
    for (const r of t.rows) expect(r.hashIds?.length).toBe(Math.ceil(r.inputLength / 512));
    // Scaled into 512 tokens every row fits, with whole KV blocks.
    const s = scaleFactor(t.p99TotalTokens, 512);
    expect(s).toBeLessThan(1);
    for (const r of t.rows) {
      const { input, output } = scaleLengths(r.inputLength, r.outputLength, s, 512);
      expect(input + output).toBeLessThanOrEqual(512);
    }
    expect(scaledBlockTokens(512, s) % 16).toBe(0);
  });
});

describe("scaling", () => {
  it("scales by ctx / p99 and never goes above 1", () => {
    expect(scaleFactor(2048, 512)).toBe(0.25);
    expect(scaleFactor(100, 512)).toBe(1);
    expect(scaleFactor(0, 512)).toBe(1);
  });

  it("keeps input + output <= ctx with at least one token each", () => {
    const ctx = 512;
    const s = scaleFactor(8000, ctx);
    const cases = [
      [0, 0],
      [1, 1],
      [4000, 10],
      [7990, 10],
      [100_000, 5],
      [5, 100_000],
      [60_000, 60_000],
      [3, 2000],
    ];
    for (const [i, o] of cases) {
      const r = scaleLengths(i as number, o as number, s, ctx);
      expect(r.input).toBeGreaterThanOrEqual(1);
      expect(r.output).toBeGreaterThanOrEqual(1);
      expect(r.input).toBeLessThanOrEqual(ctx - 1);
      expect(r.input + r.output).toBeLessThanOrEqual(ctx);
    }
    expect(scaleLengths(4000, 10, s, ctx)).toEqual({ input: 256, output: 1 });
    // The tail keeps its ratio roughly: 100k/5 stays prompt-heavy.
    expect(scaleLengths(100_000, 5, s, ctx)).toEqual({ input: 511, output: 1 });
    expect(scaleLengths(60_000, 60_000, s, ctx)).toEqual({ input: 256, output: 256 });
    for (let ctx2 = 2; ctx2 < 40; ctx2++) {
      for (const [i, o] of cases) {
        const r = scaleLengths(i as number, o as number, 1, ctx2);
        expect(r.input + r.output).toBeLessThanOrEqual(ctx2);
      }
    }
    expect(() => scaleLengths(1, 1, 1, 1)).toThrow(RangeError);
  });

  it("rounds trace blocks to whole 16-token KV blocks, at least one", () => {
    expect(scaledBlockTokens(512, 1)).toBe(512);
    expect(scaledBlockTokens(512, 0.25)).toBe(128);
    expect(scaledBlockTokens(512, 0.07)).toBe(32); // 35.8
    expect(scaledBlockTokens(512, 0.006)).toBe(16); // 3.1
  });
});

describe("prompts", () => {
  const opts = { blockTokens: 16, vocab: 768, salt: 7 };

  it("hash-id blocks are deterministic, distinct and in the safe id range", () => {
    const a = blockTokenIds(42, 16, 768, 7);
    expect(blockTokenIds(42, 16, 768, 7)).toEqual(a);
    expect(blockTokenIds(43, 16, 768, 7)).not.toEqual(a);
    expect(blockTokenIds(42, 16, 768, 8)).not.toEqual(a);
    expect(blockTokenIds(2 ** 40, 16, 768, 7)).not.toEqual(blockTokenIds(0, 16, 768, 7));
    for (const id of blockTokenIds(1, 4096, 768)) {
      expect(Number.isInteger(id) && id >= FIRST_SAFE_TOKEN_ID && id < 768).toBe(true);
    }
  });

  it("prompts have exactly the input length", () => {
    for (const n of [1, 5, 16, 17, 40, 300]) {
      expect(promptTokenIds({ requestIndex: 3, inputLength: n }, opts)).toHaveLength(n);
      expect(
        promptTokenIds({ requestIndex: 3, inputLength: n, hashIds: [1, 2] }, opts),
      ).toHaveLength(n);
    }
  });

  it("shared hash-id prefixes give identical leading ids; the rest differs", () => {
    const [r1, r2, r3] = parseTraceText(MOONCAKE, "mooncake");
    const p1 = promptTokenIds({ requestIndex: 0, inputLength: 40, hashIds: r1?.hashIds }, opts);
    const p2 = promptTokenIds({ requestIndex: 1, inputLength: 40, hashIds: r2?.hashIds }, opts);
    const p3 = promptTokenIds({ requestIndex: 2, inputLength: 40, hashIds: r3?.hashIds }, opts);
    // r1 and r2 share hash id 0 (one block); r2 and r3 share [0, 14] (two blocks).
    expect(p1.slice(0, 16)).toEqual(p2.slice(0, 16));
    expect(p1.slice(16, 32)).not.toEqual(p2.slice(16, 32));
    expect(p2.slice(0, 32)).toEqual(p3.slice(0, 32));
    expect(p2.slice(32)).not.toEqual(p3.slice(32)); // r3 runs out of blocks: its own ids
    expect(p1.slice(0, 16)).toEqual(blockTokenIds(0, 16, 768, 7));
  });

  it("requests without hash ids share nothing and are reproducible", () => {
    const a = promptTokenIds({ requestIndex: 0, inputLength: 32 }, opts);
    const b = promptTokenIds({ requestIndex: 1, inputLength: 32 }, opts);
    expect(a.slice(0, 4)).not.toEqual(b.slice(0, 4));
    expect(promptTokenIds({ requestIndex: 0, inputLength: 32 }, opts)).toEqual(a);
    expect(promptTokenIds({ requestIndex: 0, inputLength: 32 }, { ...opts, salt: 8 })).not.toEqual(
      a,
    );
  });
});

describe("poisson arrivals", () => {
  it("have the requested mean rate and are seeded", () => {
    const rate = 4;
    const a = poissonArrivals(rate, 1, 2_000_000);
    expect(a.length / 2000).toBeGreaterThan(rate * 0.97);
    expect(a.length / 2000).toBeLessThan(rate * 1.03);
    const gaps = a.slice(1).map((t, i) => t - (a[i] as number));
    const mean = gaps.reduce((s, g) => s + g, 0) / gaps.length;
    expect(mean).toBeGreaterThan(250 * 0.97);
    expect(mean).toBeLessThan(250 * 1.03);
    // Exponential gaps: the coefficient of variation is 1.
    const sd = Math.sqrt(gaps.reduce((s, g) => s + (g - mean) ** 2, 0) / gaps.length);
    expect(sd / mean).toBeGreaterThan(0.95);
    expect(sd / mean).toBeLessThan(1.05);
    expect(poissonArrivals(rate, 1, 10_000)).toEqual(
      a.slice(0, poissonArrivals(rate, 1, 10_000).length),
    );
    expect(poissonArrivals(rate, 2, 10_000)).not.toEqual(poissonArrivals(rate, 1, 10_000));
  });

  it("stop at the duration or the count and increase", () => {
    const a = poissonArrivals(10, 3, 5000);
    expect(a.every((t, i) => t < 5000 && (i === 0 || t >= (a[i - 1] as number)))).toBe(true);
    expect(poissonArrivals(10, 3, Number.POSITIVE_INFINITY, 25)).toHaveLength(25);
    expect(() => poissonArrivals(0, 1, 1000)).toThrow(RangeError);
    expect(() => poissonArrivals(1, 1, Number.POSITIVE_INFINITY)).toThrow(RangeError);
  });
});

describe("percentiles", () => {
  it("interpolates linearly like numpy", () => {
    const xs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    expect(percentile(xs, 50)).toBe(5.5);
    expect(percentile(xs, 90)).toBeCloseTo(9.1, 12);
    expect(percentile(xs, 99)).toBeCloseTo(9.91, 12);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile(xs, 100)).toBe(10);
    expect(percentile([10, 1, 5], 50)).toBe(5);
    expect(percentile([3], 99)).toBe(3);
    expect(percentile([], 50)).toBeNaN();
  });

  it("summarises p50/p90/p99, null when empty", () => {
    expect(summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).toEqual({ p50: 5.5, p90: 9.1, p99: 9.9 });
    expect(summarize([])).toEqual({ p50: null, p90: null, p99: null });
  });
});

describe("SSE parser", () => {
  it("yields data payloads across arbitrary chunk splits", () => {
    const body =
      'data: {"a":1}\n\n: comment\n\ndata: {"b":\ndata: 2}\r\n\r\nevent: x\ndata:[DONE]\r\r';
    for (let split = 0; split <= body.length; split++) {
      const p = new SseParser();
      const out = [...p.push(body.slice(0, split)), ...p.push(body.slice(split))];
      expect(out).toEqual(['{"a":1}', '{"b":\n2}', "[DONE]"]);
    }
    // One character at a time.
    const p = new SseParser();
    const out = [...body].flatMap((c) => p.push(c));
    expect(out).toEqual(['{"a":1}', '{"b":\n2}', "[DONE]"]);
  });
});
