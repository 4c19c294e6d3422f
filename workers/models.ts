/**
 * The model registry from the frontend's side: validating uploaded GGUFs, writing them to R2,
 * registering them with the ClusterManager, and the embedded default model that is written to
 * R2 on first use so a fresh `wrangler dev` serves without setup.
 */

import DEFAULT_MODEL_BYTES from "../models/lemma-moe.gguf";
import { memoryNeeded, planMemory } from "../shared/engine/instance.ts";
import { AppError } from "../shared/errors.ts";
import { type GgufFile, parseGguf } from "../shared/gguf/gguf.ts";
import { readGgufHeader, storeRangeRead } from "../shared/gguf/gguf-ranges.ts";
import { modelConfigFromGguf, numParameters } from "../shared/model/config.ts";
import { KernelMemoryError } from "../shared/model/kernels.ts";
import { minExpertRanks } from "../shared/moe/moe-memory.ts";
import { Tokenizer } from "../shared/tokenizer/tokenizer.ts";
import type { ModelRecord, ModelRegistration, ModelSummary } from "../shared/types/deployments.ts";
import { clusterManager, type Env, getConfig } from "./env.ts";
import { newDeploymentId } from "./ids.ts";

const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** @returns the name when it is a valid model name. @throws AppError 400 otherwise. */
export function checkModelName(name: string): string {
  if (!MODEL_NAME_RE.test(name)) {
    throw new AppError(
      "invalid_request",
      "model names are 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)",
      "name",
    );
  }
  return name;
}

/** A stored model as the upload routes answer it (an OpenAI model object plus its summary). */
export function modelObject(record: ModelRecord) {
  return {
    id: record.name,
    object: "model",
    created: Math.floor(record.createdAt / 1000),
    owned_by: record.ownedBy,
    size_bytes: record.sizeBytes,
    ...record.summary,
  };
}

export function r2KeyFor(name: string): string {
  return `models/${name}.gguf`;
}

/**
 * Checks that bytes are a GGUF this engine can serve within the NPU budget: in one NPU, or (a
 * MoE model too large for one) as moe-attention, its attention half in one NPU and its experts
 * spread over Expert DOs. @throws AppError 400 with the reason.
 */
export function validateGguf(bytes: Uint8Array, env: Env): ModelSummary {
  try {
    return summarize(parseGguf(bytes), env);
  } catch (e) {
    throw invalidModel(e);
  }
}

/**
 * validateGguf for a GGUF already in R2 (a completed multipart upload) from its header alone:
 * range reads of the header, tensor bounds checked against the object's size, so the model is
 * never read into worker memory. @throws AppError 400 with the reason.
 */
export async function validateStoredGguf(
  env: Env,
  key: string,
  sizeBytes: number,
): Promise<ModelSummary> {
  try {
    return summarize((await readGgufHeader(storeRangeRead(env.MODELS, key), sizeBytes)).file, env);
  } catch (e) {
    throw invalidModel(e);
  }
}

function invalidModel(e: unknown): AppError {
  const msg = `invalid model file: ${(e as Error).message}`;
  return new AppError("invalid_request", msg, "body", "invalid_model");
}

/** A parsed GGUF's summary, checked as validateGguf says. @throws on the first problem. */
function summarize(file: GgufFile, env: Env): ModelSummary {
  const cfg = getConfig(env);
  const c = modelConfigFromGguf(file);
  Tokenizer.fromGguf(file.metadata);
  const opts = {
    maxNumSeqs: cfg.maxNumSeqs,
    maxNumBatchedTokens: cfg.maxNumBatchedTokens,
    blockSize: cfg.blockSize,
  };
  try {
    planMemory(file, c, cfg.npuMemoryBudgetBytes, opts);
  } catch (e) {
    if (!(e instanceof KernelMemoryError) || c.numExperts === 0) throw e;
    planMemory(file, c, cfg.npuMemoryBudgetBytes, { ...opts, weights: "attention" });
    if (minExpertRanks(file, c, cfg.npuMemoryBudgetBytes, 1, cfg.maxNumBatchedTokens) === null) {
      throw new KernelMemoryError(`${e.message}, and one expert per Expert DO does not fit either`);
    }
  }
  return {
    architecture: c.architecture,
    numParameters: numParameters(c),
    contextLength: c.maxPositionEmbeddings,
    vocabSize: c.vocabSize,
    numExperts: c.numExperts,
    numExpertsPerTok: c.numExpertsPerTok,
    memoryNeededBytes: memoryNeeded(file, c, opts),
  };
}

/** Stores and registers a validated model. */
export async function storeModel(
  env: Env,
  name: string,
  bytes: Uint8Array,
  ownedBy: string,
): Promise<ModelRecord> {
  const summary = validateGguf(bytes, env);
  const key = r2KeyFor(name);
  await env.MODELS.put(key, bytes, { customMetadata: { ownedBy } });
  return registerStored(env, { name, r2Key: key, sizeBytes: bytes.byteLength, ownedBy, summary });
}

/**
 * Registers a validated model stored at `r2Key` (a new generation of `name`), then deletes the
 * object of the generation it replaces when that lived at another key (a multipart upload's).
 */
export async function registerStored(
  env: Env,
  m: Omit<ModelRegistration, "defaultDeploymentId">,
): Promise<ModelRecord> {
  const prev = await clusterManager(env).getModel({ name: m.name });
  const record = await clusterManager(env).registerModel({
    ...m,
    // a model too large for one NPU gets no colocated deployment: deploy it as moe-attention
    defaultDeploymentId: fitsOneNpu(env, m.summary) ? newDeploymentId() : null,
  });
  if (prev && prev.r2Key !== m.r2Key) await env.MODELS.delete(prev.r2Key);
  return record;
}

/** Whether one NPU can serve the model colocated under the current budget. */
export function fitsOneNpu(env: Env, summary: ModelSummary): boolean {
  return (summary.memoryNeededBytes ?? 0) <= getConfig(env).npuMemoryBudgetBytes;
}

let defaultModelReady: Promise<void> | null = null;

/** Writes the bundled default model to R2 and registers it, once per isolate. */
export function ensureDefaultModel(env: Env): Promise<void> {
  defaultModelReady ??= (async () => {
    const name = getConfig(env).defaultModel;
    const existing = await clusterManager(env).getModel({ name });
    if (existing && (await env.MODELS.head(existing.r2Key))) return;
    await storeModel(env, name, new Uint8Array(DEFAULT_MODEL_BYTES), "system");
  })().catch((e) => {
    defaultModelReady = null;
    throw e;
  });
  return defaultModelReady;
}

/** @throws AppError 404 for an unknown model. (Authenticated routes have registered the default.) */
export async function resolveModel(env: Env, name: string): Promise<ModelRecord> {
  const m = await clusterManager(env).getModel({ name });
  if (!m) {
    throw new AppError(
      "not_found",
      `The model \`${name}\` does not exist.`,
      "model",
      "model_not_found",
    );
  }
  return m;
}
