/**
 * Reading a model's GGUF image for an Npu from one weight tier: the R2 registry (cold), the
 * model's WeightCache (staged in DO storage), or a serving peer's memory (NPU-fork, chunked RPC).
 * Each read says how many bytes came from which tier. Nothing is cached at module scope: every
 * Npu holds its own copy, as it would in its own isolate in production.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { GgufFile } from "../shared/model/gguf.ts";
import { npuName, weightCacheName } from "../shared/protocol/names.ts";
import { numChunks, WEIGHT_CHUNK_BYTES } from "../shared/serving/scale-plan.ts";
import { noBytes, type WeightSource, type WeightTier } from "../shared/types/instances.ts";
import type { Env } from "./env.ts";
import { readAttentionImage } from "./r2-range.ts";

/** Chunk reads in flight per load. */
const CHUNK_CONCURRENCY = 4;

export interface WeightImage {
  bytes: Uint8Array;
  bytesByTier: Record<WeightTier, number>;
  /**
   * Set for a partial image (an attention rank's, readAttentionWeights): the header, relocated
   * into `bytes`. Such an image is no GGUF file, so it is no fork source.
   */
  file?: GgufFile;
}

export interface WeightRef {
  model: string;
  generation: number;
  r2Key: string;
}

function missing(what: string): Result<never> {
  return failure(errorInfo("not_found", what, "model", "model_not_found"));
}

/** Reads `count` chunks with a few in flight and joins them into `sizeBytes` bytes. */
async function readChunks(
  sizeBytes: number,
  read: (index: number) => Promise<Uint8Array | null>,
): Promise<Uint8Array | null> {
  const out = new Uint8Array(sizeBytes);
  const count = numChunks(sizeBytes);
  let next = 0;
  let ok = true;
  const lane = async () => {
    while (ok && next < count) {
      const i = next++;
      const c = await read(i);
      if (!c || c.byteLength !== Math.min(WEIGHT_CHUNK_BYTES, sizeBytes - i * WEIGHT_CHUNK_BYTES)) {
        ok = false;
        return;
      }
      out.set(c, i * WEIGHT_CHUNK_BYTES);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CHUNK_CONCURRENCY, count) }, lane));
  return ok ? out : null;
}

export async function readWeights(
  env: Env,
  ref: WeightRef,
  source: WeightSource,
): Promise<Result<WeightImage>> {
  const bytesByTier = noBytes();
  if (source.tier === "r2") {
    const obj = await env.MODELS.get(ref.r2Key);
    if (!obj) return missing(`model ${ref.model} has no weights in the registry`);
    const bytes = new Uint8Array(await obj.arrayBuffer());
    bytesByTier.r2 = bytes.byteLength;
    return { ok: true, value: { bytes, bytesByTier } };
  }
  if (source.tier === "staged") {
    const cache = env.WEIGHT_CACHE.getByName(weightCacheName(ref.model, ref.generation));
    const meta = await cache.stage({ r2Key: ref.r2Key });
    if (!meta) return missing(`model ${ref.model} has no weights in the registry`);
    const bytes = await readChunks(meta.sizeBytes, (index) => cache.chunk({ index }));
    if (!bytes) return missing(`the staged weights of ${ref.model} are incomplete`);
    bytesByTier.staged = bytes.byteLength;
    return { ok: true, value: { bytes, bytesByTier } };
  }
  const peer = env.NPU.getByName(npuName(source.fromInstanceId));
  const info = await peer.weightImage({ model: ref.model });
  if (!info) {
    const msg = `instance ${source.fromInstanceId} does not serve ${ref.model}; cannot fork from it`;
    return failure(errorInfo("overloaded", msg, null, "instance_unavailable"));
  }
  const bytes = await readChunks(info.sizeBytes, (index) =>
    peer.weightChunk({ model: ref.model, index }),
  );
  if (!bytes) {
    const msg = `instance ${source.fromInstanceId} stopped serving ${ref.model} during a fork`;
    return failure(errorInfo("overloaded", msg, null, "instance_unavailable"));
  }
  bytesByTier.fork = bytes.byteLength;
  return { ok: true, value: { bytes, bytesByTier } };
}

/**
 * An attention rank's weights (moe-attention): the header and every tensor but the MoE experts,
 * by R2 range reads at the header's offsets; `bytesByTier.r2` counts every byte fetched.
 */
export async function readAttentionWeights(env: Env, ref: WeightRef): Promise<Result<WeightImage>> {
  if (!(await env.MODELS.head(ref.r2Key))) {
    return missing(`model ${ref.model} has no weights in the registry`);
  }
  const image = await readAttentionImage(env, ref.r2Key);
  const bytesByTier = noBytes();
  bytesByTier.r2 = image.bytesRead;
  return { ok: true, value: { bytes: image.bytes, bytesByTier, file: image.file } };
}
