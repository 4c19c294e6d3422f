/**
 * Measures the simulator's step-time model (shared/sim/cost-model.ts) on a real engine: times
 * engine steps of a model (default: the synthetic model, models/synthetic-moe.gguf, wasm kernels) over a small grid
 * of batch sizes and prompt lengths (prefill chunks and decodes at growing context), `--passes`
 * times (default 3; each step's time the median of its passes), fits
 *   t_ms = a + b * scheduledTokens + c * (attendedTokens + decodeAttended) + d * numSeqs
 * (one attention coefficient for prefill and decode: no `e`; on this CPU both are compute-bound)
 * by least squares (coefficients held at 0 when the fit makes them negative), and writes a model
 * card (JSON) with the instance shape of a served instance of the model (the default serving
 * config's context, KV cache and batching; each flag overrides one), keeping the serving-path fields
 * (profile:path's) of the card it replaces. Runs well under a minute.
 *
 *   npm run -s profile:steps -- [--model PATH] [--out PATH] [--kv-cache-mb N] [--max-model-len N]
 *     [--kv-capacity-tokens N] [--max-num-seqs N] [--max-num-batched-tokens N]
 *     [--prompts 32,256,1024] [--passes N]
 *
 * `--kv-cache-mb N` derives the served shape as for a server started with `NPU_KV_CACHE_MB` = N
 * (bench:compare's `--kv-cache-mb`): the KV tokens the Npu's arena then holds.
 *
 * `--prompts` sets the grid's prompt lengths (each plus 24 generated tokens must fit the model's
 * context: a 512-token model needs e.g. 32,128,256).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { loadNodeInstance, SYNTHETIC_MODEL_PATH } from "../hosts/node-engine.ts";
import { parseServingConfig } from "../shared/config.ts";
import { planMemory } from "../shared/engine/instance.ts";
import { LocalExecutor } from "../shared/engine/local-executor.ts";
import { GREEDY, newSequence } from "../shared/engine/sequence.ts";
import { mulberry32 } from "../shared/random.ts";
import { npuLoadPlan } from "../shared/serving/scale-plan.ts";
import {
  checkModelCard,
  type ModelCard,
  PATH_FIELDS,
  type StepFeatures,
  stepFeatures,
} from "../shared/sim/cost-model.ts";
import { median } from "../shared/sim/report.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    out: { type: "string", default: "bench/cards/synthetic-moe-cpu.json" },
    // NPU_KV_CACHE_MB of the served instance whose shape the card takes (default: the config's)
    "kv-cache-mb": { type: "string" },
    // each defaults to what a served instance of the model has (servedShape)
    "max-model-len": { type: "string" },
    "kv-capacity-tokens": { type: "string" },
    "max-num-seqs": { type: "string" },
    "max-num-batched-tokens": { type: "string" },
    prompts: { type: "string", default: "32,256,1024" },
    passes: { type: "string", default: "3" },
  },
});
const numPasses = Number(values.passes);
if (!Number.isInteger(numPasses) || numPasses < 1) {
  throw new Error(`--passes must be a positive integer, got ${values.passes}`);
}
const PROMPTS = values.prompts.split(",").map(Number);
if (PROMPTS.some((p) => !Number.isInteger(p) || p < 1)) {
  throw new Error(`--prompts must be positive integers, got ${values.prompts}`);
}
const path = values.model ?? SYNTHETIC_MODEL_PATH;
const BATCHED = 256;
const inst = await loadNodeInstance(new Uint8Array(readFileSync(path)), {
  maxNumSeqs: 16,
  maxNumBatchedTokens: BATCHED,
});
const executor = new LocalExecutor(inst.transformer);
const sched = inst.scheduler;
const rng = mulberry32(7);
const vocab = inst.config.vocabSize;
const samples: { f: StepFeatures; ms: number }[] = [];

/** Runs `numSeqs` prompts of `promptLen` to `outputLen` tokens, timing every step. */
async function run(tag: string, numSeqs: number, promptLen: number, outputLen: number) {
  for (let i = 0; i < numSeqs; i++) {
    const ids = Array.from({ length: promptLen }, () => 3 + Math.floor(rng() * (vocab - 3)));
    sched.add(
      newSequence(`${tag}_${i}`, ids, { ...GREEDY, maxTokens: outputLen, ignoreEos: true }),
    );
  }
  while (sched.numUnfinished > 0) {
    const plan = sched.schedule();
    const t0 = performance.now();
    const result = await executor.execute(plan);
    const ms = performance.now() - t0;
    sched.update(plan, result);
    samples.push({ f: stepFeatures(plan), ms });
  }
}

await run("warm", 4, 64, 16); // JIT warm-up, not fitted
// the grid `--passes` times; each step's time is its median over the passes (the same step of
// each pass has the same features): a burst of other work on this shared machine during one
// pass then moves no sample
const passes: { f: StepFeatures; ms: number }[][] = [];
for (let p = 0; p < numPasses; p++) {
  samples.length = 0;
  let n = 0;
  for (const numSeqs of [1, 4, 16]) {
    for (const promptLen of PROMPTS) {
      await run(`p${p}g${n++}`, numSeqs, promptLen, 24);
    }
  }
  passes.push([...samples]);
}
samples.length = 0;
for (const [i, { f }] of (passes[0] ?? []).entries()) {
  const same = passes.every((ps) => JSON.stringify(ps[i]?.f) === JSON.stringify(f));
  if (!same) throw new Error(`profile:steps: step ${i} differs between passes`);
  samples.push({ f, ms: median(passes.map((ps) => (ps[i] as { ms: number }).ms)) });
}

/** Least squares over the columns in `use` (normal equations, Gaussian elimination). */
function leastSquares(use: boolean[]): number[] {
  const cols = (f: StepFeatures) => [
    1,
    f.scheduledTokens,
    f.attendedTokens + f.decodeAttended,
    f.numSeqs,
  ];
  const idx = use.flatMap((u, i) => (u ? [i] : []));
  const k = idx.length;
  const m = Array.from({ length: k }, () => new Array<number>(k + 1).fill(0));
  for (const { f, ms } of samples) {
    const x = cols(f);
    for (let r = 0; r < k; r++) {
      for (let c = 0; c < k; c++) m[r]![c]! += x[idx[r]!]! * x[idx[c]!]!;
      m[r]![k]! += x[idx[r]!]! * ms;
    }
  }
  for (let p = 0; p < k; p++) {
    let best = p;
    for (let r = p + 1; r < k; r++) if (Math.abs(m[r]![p]!) > Math.abs(m[best]![p]!)) best = r;
    [m[p], m[best]] = [m[best]!, m[p]!];
    for (let r = 0; r < k; r++) {
      if (r === p) continue;
      const q = m[r]![p]! / m[p]![p]!;
      for (let c = p; c <= k; c++) m[r]![c]! -= q * m[p]![c]!;
    }
  }
  const out = [0, 0, 0, 0];
  idx.forEach((col, r) => {
    out[col] = m[r]![k]! / m[r]![r]!;
  });
  return out;
}

let use = [true, true, true, true];
let coef = leastSquares(use);
while (coef.some((v, i) => use[i] && v < 0)) {
  use = use.map((u, i) => u && coef[i]! >= 0);
  coef = leastSquares(use);
}
const [a, b, c, d] = coef.map((v) => Number(v.toPrecision(4))) as [number, number, number, number];
const predicted = samples.map(
  ({ f }) => a + b * f.scheduledTokens + c * (f.attendedTokens + f.decodeAttended) + d * f.numSeqs,
);
const mean = samples.reduce((s, x) => s + x.ms, 0) / samples.length;
const ssRes = samples.reduce((s, x, i) => s + (x.ms - predicted[i]!) ** 2, 0);
const ssTot = samples.reduce((s, x) => s + (x.ms - mean) ** 2, 0);
/**
 * The shape of a served instance of the model under the default serving config (wrangler.toml's
 * vars; `--kv-cache-mb` sets NPU_KV_CACHE_MB): its context, the KV blocks the Npu's arena holds
 * (npuLoadPlan, NPU_KV_CACHE_MB), the batching limits, so that a simulated instance caches,
 * batches and chunks as the local one.
 */
let served: Record<string, number> | null = null;
const servedShape = (): Record<string, number> => {
  if (served) return served;
  const kv = values["kv-cache-mb"];
  const cfg = parseServingConfig(kv === undefined ? {} : { NPU_KV_CACHE_MB: kv });
  const { opts, arena } = npuLoadPlan(inst.file, cfg, { weights: "all", workspaces: 1 });
  const mem = planMemory(inst.file, inst.config, arena, opts);
  served = {
    "max-model-len": inst.config.maxPositionEmbeddings,
    "kv-capacity-tokens": mem.numBlocks * cfg.blockSize,
    "max-num-seqs": cfg.maxNumSeqs,
    "max-num-batched-tokens": cfg.maxNumBatchedTokens,
  };
  return served;
};
/** A flag's value, else the served instance's (which needs a model that fits an Npu). */
const shape = (flag: string): number => {
  const v = values[flag as keyof typeof values];
  if (v !== undefined) return Number(v);
  try {
    return servedShape()[flag] as number;
  } catch (e) {
    throw new Error(
      `--${flag} is needed: no served instance to take it from (${(e as Error).message})`,
    );
  }
};
const card: ModelCard = {
  name: `${inst.config.name} (measured, wasm kernels, Node ${process.versions.node})`,
  checkpoint: basename(path),
  source: `npm run -s profile:steps: ${samples.length} steps (medians of ${numPasses} passes) of ${inst.config.name}, batches 1/4/16, prompts ${PROMPTS.join("/")}, ${BATCHED}-token chunks; R^2 ${(1 - ssRes / ssTot).toFixed(3)}; instance shape: a served instance's${values["kv-cache-mb"] === undefined ? "" : ` with NPU_KV_CACHE_MB = ${values["kv-cache-mb"]}`} unless given`,
  a,
  b,
  c,
  d,
  maxModelLen: shape("max-model-len"),
  kvCapacityTokens: shape("kv-capacity-tokens"),
  blockSize: 16,
  maxNumSeqs: shape("max-num-seqs"),
  maxNumBatchedTokens: shape("max-num-batched-tokens"),
};
// the serving-path fields are profile:path's measurement: an existing card keeps them
const previous: Partial<ModelCard> = (() => {
  try {
    return JSON.parse(readFileSync(values.out, "utf8")) as Partial<ModelCard>;
  } catch {
    return {};
  }
})();
for (const k of PATH_FIELDS) if (previous[k] !== undefined) card[k] = previous[k];
if (previous.pathSharesThread !== undefined) card.pathSharesThread = previous.pathSharesThread;
if (previous.idleRequestOverheadMs !== undefined) {
  card.idleRequestOverheadMs = previous.idleRequestOverheadMs;
}
if (previous.requestJitterMs !== undefined) card.requestJitterMs = previous.requestJitterMs;
const problem = checkModelCard(card);
if (problem) throw new Error(`fitted card is invalid: ${problem}`);
writeFileSync(values.out, `${JSON.stringify(card, null, 2)}\n`);
console.log(JSON.stringify(card));
