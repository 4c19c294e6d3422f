/**
 * How the engine loop's work estimate (shared/serving/step-cost.ts: the CPU-slice budget) compares
 * with measured step times: for the synthetic model and each reference checkpoint present, greedy
 * runs of 1 and 8 sequences (a 64-token prompt, then decode) on the wasm kernels in Node. Per
 * model: the ratio of the summed measured to the summed estimated step time (below 1: the estimate
 * errs on the safe side, a slice ends before its CPU time reaches NPU_SLICE_MS), and the median
 * and largest ratio of single steps (the largest is a pause: a GC, another process).
 *
 *   npm run -s bench:step-cost [-- --tokens 64]
 */
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadNodeInstance, SYNTHETIC_MODEL_PATH } from "../hosts/node-engine.ts";
import { GREEDY } from "../shared/engine/sequence.ts";
import { estimatedStepMs } from "../shared/serving/step-cost.ts";
import { median } from "./engine-measure.ts";

const { values } = parseArgs({ options: { tokens: { type: "string", default: "64" } } });
const numTokens = Number(values.tokens);

const MODELS: [string, string][] = [
  ["synthetic-moe", SYNTHETIC_MODEL_PATH],
  ["stories260K", "../shared/models/stories260K-f32.gguf"],
  ["tiny-mixtral", "../shared/models/tiny-mixtral-f32.gguf"],
  ["tiny-qwen3moe", "../shared/models/tiny-qwen3moe-f32.gguf"],
];

const results: Record<string, unknown> = {};
for (const [name, path] of MODELS) {
  if (!existsSync(path)) continue;
  const inst = await loadNodeInstance(new Uint8Array(readFileSync(path)), {
    maxNumSeqs: 8,
    maxNumBatchedTokens: 256,
  });
  const prompt = Array.from({ length: 64 }, (_, i) => 1 + ((i * 7) % (inst.config.vocabSize - 1)));
  const ratios: number[] = [];
  let measuredMs = 0;
  let estimatedMs = 0;
  for (const [run, batch] of [1, 1, 8, 8].entries()) {
    for (let i = 0; i < batch; i++) {
      const err = inst.engine.add(`r${run}s${i}`, prompt, {
        ...GREEDY,
        maxTokens: numTokens,
        ignoreEos: true,
      });
      if (err) throw new Error(err.message);
    }
    while (inst.engine.hasWork()) {
      const t0 = performance.now();
      const r = await inst.engine.step();
      const ms = performance.now() - t0;
      if (run % 2 === 0) continue; // the first run of each size warms the JIT up
      const est = estimatedStepMs(inst.config, r);
      ratios.push(ms / est);
      measuredMs += ms;
      estimatedMs += est;
    }
  }
  results[name] = {
    numSteps: ratios.length,
    measuredMs: Math.round(measuredMs),
    estimatedMs: Math.round(estimatedMs),
    totalRatio: Number((measuredMs / estimatedMs).toFixed(3)),
    medianRatio: Number(median(ratios).toFixed(3)),
    maxRatio: Number(Math.max(...ratios).toFixed(3)),
  };
  console.error(name, JSON.stringify(results[name]));
}
console.log(JSON.stringify({ bench: "step-cost", numTokens, models: results }));
