/**
 * Engine throughput: single-stream greedy decode (256 tokens after a short prompt) and batched
 * decode (8 and 32 sequences of 256 tokens), tokens per second, median of several runs. Runs the
 * same shared/ engine and the same wasm kernels as workerd.
 *
 *   npm run -s bench:engine -- --model PATH --json [--runs N] [--kernels wasm|js]
 *
 * With --vs-llama-cpp (bench/engine-vs-llama-cpp.ts): decode-only tokens/s against llama.cpp on
 * one thread, for the model and its Q8_0/Q4_0/Q4_K_M conversions (64 tokens per sequence unless
 * --tokens), with the roofline:
 *
 *   npm run -s bench:engine -- --model .tmp/bench-llama.gguf --json --vs-llama-cpp
 *     [--llama-cpp-bin DIR (or LLAMA_CPP_BIN)] [--types F32,Q8_0,Q4_0,Q4_K_M] [--runs 3]
 *     [--wasm-builds relaxed-simd,simd128] [--llama-cpp-128 DIR]
 *
 * Our side runs each wasm build in --wasm-builds (default both: wasm/kernels-relaxed.wasm and
 * wasm/kernels.wasm) in every round. Node 20 compiles relaxed SIMD only with a V8 flag, which
 * NODE_OPTIONS does not take: when a relaxed build is asked for and this Node lacks it, the
 * benchmark re-runs itself as `node --experimental-wasm-relaxed-simd --import tsx`. The JSON's
 * `wasm` is the build of `ours` (the first of --wasm-builds). `--llama-cpp-128 DIR`: a second
 * llama.cpp build limited to 128-bit integer vectors, as wasm SIMD128 is (cmake -DGGML_NATIVE=OFF
 * -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF: its AVX kernels), timed in the same rounds.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { exportLlama2c } from "../hosts/llama2c-export.ts";
import { DEFAULT_MODEL_PATH } from "../hosts/node-engine.ts";
import { WASM_BUILD } from "../hosts/node-kernels.ts";
import { measure, median, PROMPTS } from "./engine-measure.ts";
import {
  compareWithLlamaCpp,
  formatComparison,
  parseBenchTypes,
  parseWasmBuilds,
} from "./engine-vs-llama-cpp.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    runs: { type: "string" },
    tokens: { type: "string" },
    kernels: { type: "string", default: "wasm" },
    json: { type: "boolean", default: false },
    /** A compiled llama2.c run.c (gcc -O3 -o run run.c -lm), timed on the same model. */
    runc: { type: "string" },
    "vs-llama-cpp": { type: "boolean", default: false },
    /** A llama.cpp build's bin directory (llama-quantize, llama-bench, llama-batched-bench). */
    "llama-cpp-bin": { type: "string" },
    "llama-cpp-128": { type: "string" },
    types: { type: "string", default: "F32,Q8_0,Q4_0,Q4_K_M" },
    "wasm-builds": { type: "string", default: "relaxed-simd,simd128" },
  },
});
const path = values.model ?? DEFAULT_MODEL_PATH;
const vs = values["vs-llama-cpp"];
const runs = Number(values.runs ?? (vs ? 3 : 5));
const numTokens = Number(values.tokens ?? (vs ? 64 : 256));
const kernels = values.kernels === "js" ? "js" : "wasm";

if (vs) {
  const builds = parseWasmBuilds(values["wasm-builds"] as string);
  const relaxedFlag = "--experimental-wasm-relaxed-simd";
  if (kernels === "wasm" && builds.includes("relaxed-simd") && WASM_BUILD !== "relaxed-simd") {
    if (process.execArgv.includes(relaxedFlag))
      throw new Error("this Node does not compile relaxed SIMD even with its flag");
    const args = [relaxedFlag, "--import", "tsx", ...process.argv.slice(1)];
    process.exit(spawnSync(process.execPath, args, { stdio: "inherit" }).status ?? 1);
  }
  const llamaCppBin = values["llama-cpp-bin"] ?? process.env.LLAMA_CPP_BIN;
  if (!llamaCppBin) throw new Error("--vs-llama-cpp needs --llama-cpp-bin DIR or LLAMA_CPP_BIN");
  const types = parseBenchTypes(values.types as string);
  const r = await compareWithLlamaCpp({
    source: path,
    types,
    llamaCppBin,
    llamaCpp128Bin: values["llama-cpp-128"],
    runs,
    numTokens,
    kernels,
    builds,
  });
  if (!values.json) console.log(formatComparison(r));
  console.log(JSON.stringify(r));
  process.exit(0);
}

const bytes = new Uint8Array(readFileSync(path));
/** run.c's own "achieved tok/s" for greedy decode of the same token count, median of runs. */
function measureRunC(runc: string): number {
  const dir = mkdtempSync(join(tmpdir(), "llama2c-"));
  exportLlama2c(bytes, join(dir, "model.bin"), join(dir, "tok.bin"));
  const samples: number[] = [];
  for (let r = 0; r < runs; r++) {
    const out = spawnSync(
      runc,
      [
        join(dir, "model.bin"),
        "-z",
        join(dir, "tok.bin"),
        "-t",
        "0",
        "-n",
        String(numTokens),
        "-i",
        PROMPTS[0] as string,
      ],
      { encoding: "utf8" },
    );
    const m = /achieved tok\/s: ([\d.]+)/.exec(out.stderr ?? "");
    if (!m) throw new Error(`run.c printed no tok/s: ${out.stderr}`);
    samples.push(Number(m[1]));
  }
  return median(samples);
}

const runcTokensPerS = values.runc ? measureRunC(values.runc) : null;
const opts = { runs, numTokens, kernels } as const;
const single = await measure(bytes, 1, opts);
const b8 = await measure(bytes, 8, opts);
const b32 = await measure(bytes, 32, opts);
const result = {
  single_stream_tokens_per_s: Math.round(single.tokensPerS),
  batched_tokens_per_s: { "8": Math.round(b8.tokensPerS), "32": Math.round(b32.tokensPerS) },
  runtime: "node",
  node: process.version,
  kernels,
  ...(kernels === "wasm" ? { wasm: WASM_BUILD } : {}),
  model: path.split("/").pop(),
  tokens_per_sequence: numTokens,
  runs,
  ms_per_step: {
    "1": +single.msPerStep.toFixed(3),
    "8": +b8.msPerStep.toFixed(3),
    "32": +b32.msPerStep.toFixed(3),
  },
  batch32_over_single: +(b32.tokensPerS / single.tokensPerS).toFixed(2),
  ...(runcTokensPerS === null
    ? {}
    : {
        llama2c_runc_tokens_per_s: Math.round(runcTokensPerS),
        single_over_runc: +(single.tokensPerS / runcTokensPerS).toFixed(2),
      }),
};
if (!values.json)
  console.log(
    `${result.model}: ${result.single_stream_tokens_per_s} tok/s single, ${result.batched_tokens_per_s["32"]} tok/s at batch 32`,
  );
console.log(JSON.stringify(result));
