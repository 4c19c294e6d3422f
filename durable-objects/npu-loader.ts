/**
 * Model loading for the Npu: fetches a model's GGUF from the R2 registry, instantiates the wasm
 * kernels with the per-NPU memory budget as their arena, builds the model instance (weights, KV
 * cache, scheduler, engine) and the chat renderer. The Npu keeps the result (one model per NPU,
 * loaded once). Also turns a task into engine sequences with the loaded model's tokenizer and
 * chat template.
 */
import { createInstance, type ModelInstance } from "../shared/engine/instance.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { KernelMemoryError, type Kernels } from "../shared/model/kernels.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";
import type { GenerateTask } from "../shared/protocol/messages.ts";
import { type PreparedTask, prepareTask } from "../shared/serving/task.ts";
import kernelsModule from "../wasm/kernels.wasm";
import { type ChatRenderer, createChatRenderer } from "./chat-template.ts";
import { type Env, getConfig } from "./env.ts";

export interface Loaded {
  model: string;
  instance: ModelInstance;
  kernels: Kernels;
  chat: ChatRenderer;
}

/** Tokenises a task for the loaded model (chat template, BOS and context rules). */
export function prepareFor(loaded: Loaded, task: GenerateTask): Result<PreparedTask> {
  const { instance, chat } = loaded;
  return prepareTask(task, instance.tokenizer, instance.engine.maxModelLen, (m) => chat.render(m));
}

/** Loads `model` from the R2 registry into a fresh kernel arena. Failures are values. */
export async function loadModel(
  env: Env,
  log: Logger,
  model: string,
  r2Key: string,
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
    const instance = createInstance(bytes, kernels, {
      maxNumSeqs: cfg.maxNumSeqs,
      maxNumBatchedTokens: cfg.maxNumBatchedTokens,
      blockSize: cfg.blockSize,
    });
    const chat = createChatRenderer(
      instance.file.metadata.get("tokenizer.chat_template") as string | undefined,
      instance.tokenizer,
    );
    log.info("model.loaded", {
      model,
      sizeBytes: bytes.byteLength,
      numBlocks: instance.memory.numBlocks,
      weightBytes: instance.memory.weightBytes,
      durationMs: Date.now() - t0,
    });
    return { ok: true, value: { model, instance, kernels, chat } };
  } catch (e) {
    log.error("model.load_failed", { model, ...errorFields(e) });
    const kind = e instanceof KernelMemoryError ? "capacity" : "internal";
    return failure(errorInfo(kind, `cannot load model ${model}: ${(e as Error).message}`));
  }
}
