/**
 * Engine throughput runs for bench/engine.ts: `batch` sequences of greedy decode after short
 * prompts on one instance (Node, one thread). Each run reports end-to-end tokens/s (prefill
 * included, as the README's first table) and decode-only tokens/s: timed from the step in which
 * every sequence has sampled its first token (its prompt is prefilled) to the end, which is what
 * llama-bench's and llama-batched-bench's text-generation numbers time.
 */
import { loadNodeInstance } from "../hosts/node-engine.ts";
import type { KernelKind } from "../hosts/node-kernels.ts";
import { GREEDY } from "../shared/engine/sequence.ts";

export const PROMPTS = [
  "Once upon a time",
  "Lily wanted",
  "The dog",
  "One day, a little",
  "Tom and Sue",
];

export const median = (xs: number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

export interface EngineRunOptions {
  /** Tokens generated per sequence. */
  numTokens: number;
  kernels: KernelKind;
  /** Another build of wasm/kernels.ts instead of the committed one (bench/kernels-ab.ts). */
  wasmModule?: WebAssembly.Module;
}

export interface RunSample {
  tokensPerS: number;
  decodeTokensPerS: number;
  msPerStep: number;
  /** Every sampled token id, in step order (sequences in each step's output order). */
  tokens: number[];
}

export interface EngineRunner {
  /** Bytes the instance's weights take in kernel memory (its memory plan). */
  weightBytes: number;
  /** One run of `batch` sequences to their end. */
  run(): Promise<RunSample>;
}

/** Loads `bytes` into a fresh instance sized for `batch` sequences. @throws if it cannot load. */
export async function engineRunner(
  bytes: Uint8Array,
  batch: number,
  o: EngineRunOptions,
): Promise<EngineRunner> {
  const inst = await loadNodeInstance(bytes, {
    kernels: o.kernels,
    wasmModule: o.wasmModule,
    maxNumSeqs: Math.max(batch, 1),
    maxNumBatchedTokens: Math.max(256, batch * 8),
  });
  let runNo = 0;
  const run = async (): Promise<RunSample> => {
    const r = runNo++;
    for (let i = 0; i < batch; i++) {
      const prompt = inst.tokenizer.encode(PROMPTS[i % PROMPTS.length] as string);
      const err = inst.engine.add(`s${r}_${i}`, prompt, {
        ...GREEDY,
        maxTokens: o.numTokens,
        ignoreEos: true,
      });
      if (err) throw new Error(err.message);
    }
    let generated = 0;
    let steps = 0;
    const tokens: number[] = [];
    let decodeStart: { t: number; generated: number } | null = null;
    const t0 = performance.now();
    while (inst.engine.hasWork()) {
      const report = await inst.engine.step();
      generated += report.numSampled;
      for (const out of report.outputs) tokens.push(out.sampled.tokenId);
      steps++;
      if (decodeStart === null && generated >= batch)
        decodeStart = { t: performance.now(), generated };
    }
    const t1 = performance.now();
    if (decodeStart === null || generated === decodeStart.generated)
      throw new Error(`no decode steps after prefill (batch ${batch}, ${o.numTokens} tokens)`);
    return {
      tokensPerS: generated / ((t1 - t0) / 1000),
      decodeTokensPerS: (generated - decodeStart.generated) / ((t1 - decodeStart.t) / 1000),
      msPerStep: (t1 - t0) / steps,
      tokens,
    };
  };
  return { weightBytes: inst.memory.weightBytes, run };
}

/** Medians over `runs` runs after one warm-up run (the JIT) on a fresh instance. */
export async function measure(
  bytes: Uint8Array,
  batch: number,
  o: EngineRunOptions & { runs: number },
): Promise<RunSample> {
  const runner = await engineRunner(bytes, batch, o);
  await runner.run();
  const samples: RunSample[] = [];
  for (let r = 0; r < o.runs; r++) samples.push(await runner.run());
  return {
    tokensPerS: median(samples.map((s) => s.tokensPerS)),
    decodeTokensPerS: median(samples.map((s) => s.decodeTokensPerS)),
    msPerStep: median(samples.map((s) => s.msPerStep)),
    tokens: samples[0]?.tokens ?? [],
  };
}
