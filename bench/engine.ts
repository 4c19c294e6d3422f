/**
 * Engine throughput: single-stream greedy decode (256 tokens after a short prompt) and batched
 * decode (8 and 32 sequences of 256 tokens), tokens per second, median of several runs. Runs the
 * same shared/ engine and the same wasm kernels as workerd.
 *
 *   npm run -s bench:engine -- --model PATH --json [--runs N] [--kernels wasm|js]
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { exportLlama2c } from "../hosts/llama2c-export.ts";
import { DEFAULT_MODEL_PATH, loadNodeInstance } from "../hosts/node-engine.ts";
import { GREEDY } from "../shared/engine/sequence.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    runs: { type: "string", default: "5" },
    tokens: { type: "string", default: "256" },
    kernels: { type: "string", default: "wasm" },
    json: { type: "boolean", default: false },
    /** A compiled llama2.c run.c (gcc -O3 -o run run.c -lm), timed on the same model. */
    runc: { type: "string" },
  },
});
const path = values.model ?? DEFAULT_MODEL_PATH;
const bytes = new Uint8Array(readFileSync(path));
const runs = Number(values.runs);
const numTokens = Number(values.tokens);
const kernels = values.kernels === "js" ? "js" : "wasm";
const PROMPTS = ["Once upon a time", "Lily wanted", "The dog", "One day, a little", "Tom and Sue"];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

async function measure(batch: number): Promise<{ tokensPerS: number; msPerStep: number }> {
  const inst = await loadNodeInstance(bytes, {
    kernels,
    maxNumSeqs: Math.max(batch, 1),
    maxNumBatchedTokens: Math.max(256, batch * 8),
  });
  const samples: number[] = [];
  const stepMs: number[] = [];
  for (let r = 0; r < runs + 1; r++) {
    for (let i = 0; i < batch; i++) {
      const prompt = inst.tokenizer.encode(PROMPTS[i % PROMPTS.length] as string);
      const err = inst.engine.add(`s${r}_${i}`, prompt, {
        ...GREEDY,
        maxTokens: numTokens,
        ignoreEos: true,
      });
      if (err) throw new Error(err.message);
    }
    let generated = 0;
    let steps = 0;
    const t0 = performance.now();
    while (inst.engine.hasWork()) {
      generated += (await inst.engine.step()).numSampled;
      steps++;
    }
    const s = (performance.now() - t0) / 1000;
    if (r > 0) {
      samples.push(generated / s); // the first run warms the JIT
      stepMs.push((s * 1000) / steps);
    }
  }
  return { tokensPerS: median(samples), msPerStep: median(stepMs) };
}

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
const single = await measure(1);
const b8 = await measure(8);
const b32 = await measure(32);
const result = {
  single_stream_tokens_per_s: Math.round(single.tokensPerS),
  batched_tokens_per_s: { "8": Math.round(b8.tokensPerS), "32": Math.round(b32.tokensPerS) },
  runtime: "node",
  node: process.version,
  kernels,
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
