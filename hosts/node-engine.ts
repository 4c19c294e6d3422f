/** Node host helpers for the CLI, benchmarks and tests: build an instance, run one sequence. */
import type { Engine } from "../shared/engine/engine.ts";
import {
  createInstance,
  type InstanceOptions,
  type ModelInstance,
} from "../shared/engine/instance.ts";
import type { SamplingParams } from "../shared/engine/sequence.ts";
import { createKernels, type KernelKind } from "./node-kernels.ts";

/** The embedded default model: the trained lemma-chain MoE (README "KV-cache policies"). */
export const DEFAULT_MODEL_PATH = new URL("../models/lemma-moe.gguf", import.meta.url).pathname;
/**
 * The seeded synthetic MoE (scripts/make-synthetic-model.ts): a 768-token byte-fallback vocabulary,
 * 8 experts and a 2048-token context, for tests and benchmarks that need general text or length.
 */
export const SYNTHETIC_MODEL_PATH = new URL("../models/synthetic-moe.gguf", import.meta.url)
  .pathname;

/** Node has no 128 MB isolate limit; the CLI still runs in an arena, just a larger one. */
export const NODE_MEMORY_BUDGET_BYTES = 1024 * 2 ** 20;

export async function loadNodeInstance(
  bytes: Uint8Array,
  opts: InstanceOptions & {
    kernels?: KernelKind;
    capacityBytes?: number;
    /** Another build of wasm/kernels.ts to run instead of the committed one. */
    wasmModule?: WebAssembly.Module;
  } = {},
): Promise<ModelInstance> {
  const kernels = await createKernels(
    opts.kernels ?? "wasm",
    opts.capacityBytes ?? NODE_MEMORY_BUDGET_BYTES,
    opts.wasmModule,
  );
  return createInstance(bytes, kernels, opts);
}

/** Runs one sequence to its end; returns the generated ids (EOS included) and text. */
export async function runToCompletion(
  engine: Engine,
  promptIds: readonly number[],
  params: SamplingParams,
  seqId = "seq_cli",
): Promise<{ ids: number[]; text: string; finishReason: string | null }> {
  const err = engine.add(seqId, promptIds, params);
  if (err) throw new Error(err.message);
  const ids: number[] = [];
  let text = "";
  let finishReason: string | null = null;
  while (engine.hasWork()) {
    const report = await engine.step();
    for (const o of report.outputs) {
      if (o.seqId !== seqId) continue;
      ids.push(...o.newTokenIds);
      text += o.text;
      if (o.finished) finishReason = o.finishReason;
    }
  }
  return { ids, text, finishReason };
}
