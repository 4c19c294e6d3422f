/**
 * llama.cpp's own tools, run one at a time on one thread, for `bench:engine --vs-llama-cpp`:
 * `llama-quantize` makes the quantized files from the F32 one, `llama-bench` times
 * single-stream decode and `llama-batched-bench` times batched decode (the text-generation
 * phase of `pl` sequences decoded together in one batch per step). `dir` is a llama.cpp build's
 * bin directory (`--llama-cpp-bin` or LLAMA_CPP_BIN).
 */
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { median } from "./engine-measure.ts";

/** The file types the comparison knows, as llama-quantize names them. */
export const BENCH_TYPES = ["F32", "F16", "Q8_0", "Q4_0", "Q4_K_M"] as const;
export type BenchType = (typeof BENCH_TYPES)[number];

function run(dir: string, tool: string, args: string[]): string {
  const bin = join(dir, tool);
  if (!existsSync(bin)) throw new Error(`${bin} not found (build its target in llama.cpp)`);
  const out = spawnSync(bin, args, { encoding: "utf8", maxBuffer: 64 << 20 });
  if (out.status !== 0)
    throw new Error(`${tool} ${args.join(" ")} exited ${out.status}:\n${out.stderr.slice(-3000)}`);
  return out.stdout;
}

/**
 * The `type` file made from `source`: `<source without .gguf>.<type>.gguf` beside it, quantized
 * again only when missing or older than the source.
 */
export function quantizedPath(dir: string, source: string, type: BenchType): string {
  const out = join(dirname(source), `${basename(source, ".gguf")}.${type}.gguf`);
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(source).mtimeMs)
    run(dir, "llama-quantize", [source, out, type, "1"]);
  return out;
}

export interface LlamaCppSingle {
  tokensPerS: number;
  /** llama.cpp's size of all the model's tensors, bytes. */
  modelBytes: number;
  params: number;
}

/** `llama-bench -t 1 -p 0 -n tokens -r reps`: median of its per-repetition decode tokens/s. */
export function llamaBenchDecode(
  dir: string,
  model: string,
  tokens: number,
  reps: number,
): LlamaCppSingle {
  const args = ["-m", model, "-t", "1", "-p", "0", "-n", String(tokens)];
  const json = JSON.parse(run(dir, "llama-bench", [...args, "-r", String(reps), "-o", "json"]));
  const row = json[0] as { samples_ts: number[]; model_size: number; model_n_params: number };
  return {
    tokensPerS: median(row.samples_ts),
    modelBytes: row.model_size,
    params: row.model_n_params,
  };
}

export const BATCHED_PROMPT_TOKENS = 8;

/**
 * One `llama-batched-bench -t 1 -tb 1 -npp 8 -ntg tokens -npl batches` run: its text-generation
 * tokens/s (all sequences together) per batch size.
 */
export function batchedBenchDecode(
  dir: string,
  model: string,
  tokens: number,
  batches: number[],
): Map<number, number> {
  const ctx = Math.ceil((Math.max(...batches) * (BATCHED_PROMPT_TOKENS + tokens)) / 256) * 256;
  const args = [
    ...["-m", model, "-c", String(ctx), "-b", "2048", "-ub", "512", "-t", "1", "-tb", "1"],
    ...["-npp", String(BATCHED_PROMPT_TOKENS), "-ntg", String(tokens)],
    ...["-npl", batches.join(","), "--output-format", "jsonl"],
  ];
  const tps = new Map<number, number>();
  for (const line of run(dir, "llama-batched-bench", args).split("\n")) {
    if (!line.startsWith("{")) continue;
    const row = JSON.parse(line) as { pl: number; speed_tg: number };
    tps.set(row.pl, row.speed_tg);
  }
  for (const b of batches)
    if (!tps.has(b)) throw new Error(`llama-batched-bench gave no row for batch ${b}`);
  return tps;
}
