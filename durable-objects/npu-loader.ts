/**
 * Model loading for the Npu: fetches a model's GGUF from the R2 registry, instantiates the wasm
 * kernels with the per-NPU memory budget as their arena, builds the model instance (weights, KV
 * cache, scheduler, engine). The Npu keeps the result (one model per NPU, loaded once). Prompts
 * reach the Npu already tokenised by the JobExecutor.
 */
import type { Executor } from "../shared/engine/executor.ts";
import { createInstance, type ModelInstance } from "../shared/engine/instance.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { KernelMemoryError, type Kernels } from "../shared/model/kernels.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";
import type { Transformer } from "../shared/model/transformer.ts";
import kernelsModule from "../wasm/kernels.wasm";
import { type Env, getConfig } from "./env.ts";

export interface Loaded {
  model: string;
  instance: ModelInstance;
  kernels: Kernels;
}

/**
 * How an attention rank of a moe-attention instance loads: without the MoE experts, with an
 * executor that sends the experts' halves to the expert ranks (attention-rank.ts).
 */
export interface AttentionLoad {
  makeExecutor: (t: Transformer) => Executor;
}

/** Loads `model` from the R2 registry into a fresh kernel arena. Failures are values. */
export async function loadModel(
  env: Env,
  log: Logger,
  model: string,
  r2Key: string,
  attention: AttentionLoad | null = null,
): Promise<Result<Loaded>> {
  const t0 = Date.now();
  const obj = await env.MODELS.get(r2Key);
  if (!obj)
    return failure(
      errorInfo(
        "not_found",
        `model ${model} has no weights in the registry`,
        "model",
        "model_not_found",
      ),
    );
  const bytes = new Uint8Array(await obj.arrayBuffer());
  const cfg = getConfig(env);
  try {
    const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
    const kernels = createWasmKernels(wasm, cfg.npuMemoryBudgetBytes);
    const instance = createInstance(
      bytes,
      kernels,
      {
        maxNumSeqs: cfg.maxNumSeqs,
        maxNumBatchedTokens: cfg.maxNumBatchedTokens,
        blockSize: cfg.blockSize,
        weights: attention ? "attention" : "all",
      },
      attention?.makeExecutor,
    );
    log.info("model.loaded", {
      model,
      sizeBytes: bytes.byteLength,
      numBlocks: instance.memory.numBlocks,
      weightBytes: instance.memory.weightBytes,
      residentWeightBytes: instance.residentWeightBytes,
      role: attention ? "attention" : "colocated",
      durationMs: Date.now() - t0,
    });
    return { ok: true, value: { model, instance, kernels } };
  } catch (e) {
    log.error("model.load_failed", { model, ...errorFields(e) });
    // a model over this NPU's budget (the budget changed since its upload) will not fit on retry
    const code = e instanceof KernelMemoryError ? "model_too_large" : null;
    return failure(
      errorInfo("internal", `cannot load model ${model}: ${(e as Error).message}`, null, code),
    );
  }
}

/** An NPU's one model: loaded once; concurrent callers share the load in flight. */
export class ModelSlot {
  current: Loaded | null = null;
  private loading: Promise<Result<Loaded>> | null = null;
  private loadingModel: string | null = null;
  /** Set before the first load to load as a moe-attention attention rank. */
  attention: AttentionLoad | null = null;

  constructor(
    private readonly env: Env,
    private readonly log: Logger,
  ) {}

  /** `model` loaded from the R2 registry (once); another model is an error value. */
  ensure(model: string, r2Key: string): Promise<Result<Loaded>> {
    if (this.current) {
      if (this.current.model === model) return Promise.resolve({ ok: true, value: this.current });
      return Promise.resolve(
        failure(errorInfo("internal", `this NPU serves ${this.current.model}, not ${model}`)),
      );
    }
    if (this.loading && this.loadingModel !== model) {
      return Promise.resolve(
        failure(errorInfo("internal", `this NPU is loading ${this.loadingModel}, not ${model}`)),
      );
    }
    this.loadingModel = model;
    this.loading ??= loadModel(this.env, this.log, model, r2Key, this.attention).then((r) => {
      if (r.ok) this.current = r.value;
      else this.loading = null; // let a later call retry
      return r;
    });
    return this.loading;
  }

  /** Forgets the model (a hung engine is replaced): the next task loads a fresh one. */
  drop(): void {
    this.current = null;
    this.loading = null;
    this.loadingModel = null;
  }
}
