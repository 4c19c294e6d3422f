/**
 * One engine throughput measurement for bench/engine.ts: `batch` sequences of greedy decode
 * after short prompts, on a fresh instance (Node, one thread), median over `runs` after one
 * warm-up run. Reports end-to-end tokens/s (prefill included, as the README's first table) and
 * decode-only tokens/s: timed from the step in which every sequence has sampled its first token
 * (its prompt is prefilled) to the end, which is what llama-bench's and llama-batched-bench's
 * text-generation numbers time.
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

export interface EngineMeasureOptions {
  runs: number;
  /** Tokens generated per sequence. */
  numTokens: number;
  kernels: KernelKind;
}

export interface Throughput {
  tokensPerS: number;
  decodeTokensPerS: number;
  msPerStep: number;
  /** Bytes the instance's weights take in kernel memory (its memory plan). */
  weightBytes: number;
}

export async function measure(
  bytes: Uint8Array,
  batch: number,
  o: EngineMeasureOptions,
): Promise<Throughput> {
  const inst = await loadNodeInstance(bytes, {
    kernels: o.kernels,
    maxNumSeqs: Math.max(batch, 1),
    maxNumBatchedTokens: Math.max(256, batch * 8),
  });
  const samples: number[] = [];
  const decodeSamples: number[] = [];
  const stepMs: number[] = [];
  for (let r = 0; r < o.runs + 1; r++) {
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
    let decodeStart: { t: number; generated: number } | null = null;
    const t0 = performance.now();
    while (inst.engine.hasWork()) {
      generated += (await inst.engine.step()).numSampled;
      steps++;
      if (decodeStart === null && generated >= batch)
        decodeStart = { t: performance.now(), generated };
    }
    const t1 = performance.now();
    if (r === 0) continue; // the first run warms the JIT
    const s = (t1 - t0) / 1000;
    samples.push(generated / s);
    stepMs.push((s * 1000) / steps);
    if (decodeStart === null || generated === decodeStart.generated)
      throw new Error(`no decode steps after prefill (batch ${batch}, ${o.numTokens} tokens)`);
    decodeSamples.push((generated - decodeStart.generated) / ((t1 - decodeStart.t) / 1000));
  }
  return {
    tokensPerS: median(samples),
    decodeTokensPerS: median(decodeSamples),
    msPerStep: median(stepMs),
    weightBytes: inst.memory.weightBytes,
  };
}
