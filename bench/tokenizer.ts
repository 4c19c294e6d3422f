/**
 * Tokenizer benchmark: for each vocab of llama.cpp's tokenizer test set (../shared/models/vocab),
 * the time to build the tokenizer from the GGUF metadata, and encode throughput on ~64 KB of
 * mixed text (the fixture texts: code, CJK, emoji, whitespace runs, prose), cold (a fresh
 * tokenizer, empty word cache) and warm (median of repeats).
 *
 *   npm run -s bench:tokenizer [-- --json]   (--json: the results as JSON on the last line)
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { Tokenizer } from "../shared/tokenizer/tokenizer.ts";

const { values } = parseArgs({ options: { json: { type: "boolean", default: false } } });
const VOCAB_DIR = join(import.meta.dirname, "../../shared/models/vocab");
const FIXTURE = join(import.meta.dirname, "../test/fixtures/llama-cpp-vocab-tokenize.json");

const texts = (JSON.parse(readFileSync(FIXTURE, "utf8")) as { texts: string[] }).texts;
const sample = texts.join("\n");
const text = sample.repeat(Math.ceil(65536 / sample.length));
const textBytes = new TextEncoder().encode(text).length;
const RUNS = 5;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] as number;

interface Row {
  vocab: string;
  model: string;
  buildMs: number;
  numTokens: number;
  coldMBps: number;
  warmMBps: number;
}
const rows: Row[] = [];
for (const file of readdirSync(VOCAB_DIR)
  .filter((f) => f.endsWith(".gguf"))
  .sort()) {
  const meta = parseGguf(new Uint8Array(readFileSync(join(VOCAB_DIR, file)))).metadata;
  let t0 = performance.now();
  const tok = Tokenizer.fromGguf(meta);
  const buildMs = performance.now() - t0;
  t0 = performance.now();
  const ids = tok.encode(text, { addBos: false });
  const coldMs = performance.now() - t0;
  const warm: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    t0 = performance.now();
    tok.encode(text, { addBos: false });
    warm.push(performance.now() - t0);
  }
  const mbps = (ms: number) => Math.round((textBytes / 1e6 / (ms / 1000)) * 100) / 100;
  rows.push({
    vocab: file.replace(/^ggml-vocab-|\.gguf$/g, ""),
    model: tok.model,
    buildMs: Math.round(buildMs),
    numTokens: ids.length,
    coldMBps: mbps(coldMs),
    warmMBps: mbps(median(warm)),
  });
}

if (!values.json) {
  console.log(`encode ${textBytes} bytes of mixed text; MB/s of UTF-8 input`);
  console.log("vocab            model  build ms  tokens  cold MB/s  warm MB/s");
  for (const r of rows) {
    console.log(
      `${r.vocab.padEnd(16)} ${r.model.padEnd(6)} ${String(r.buildMs).padStart(8)} ` +
        `${String(r.numTokens).padStart(7)} ${String(r.coldMBps).padStart(10)} ` +
        `${String(r.warmMBps).padStart(10)}`,
    );
  }
}
console.log(JSON.stringify({ textBytes, runs: RUNS, results: rows }));
