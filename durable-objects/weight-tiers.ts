/**
 * Reading a model's GGUF image for an Npu from one weight tier: the R2 registry (cold), the
 * model's WeightCache (staged in DO storage), or, for NPU-fork, the weight region a serving peer
 * built in its kernel memory (with the GGUF header to rebind it). Each read says how many bytes
 * came from which tier. Nothing is cached at module scope: every Npu holds its own copy, as it
 * would in its own isolate in production.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { GgufFile } from "../shared/gguf/gguf.ts";
import type { WeightSelection } from "../shared/model/weights.ts";
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
   * into `bytes`, and the file's own header bytes (what a fork target rebinds the region with).
   */
  file?: GgufFile;
  header?: Uint8Array;
}

/** What a fork source sends: its GGUF header and its built weight region, streamed. */
export interface ForkImage {
  header: Uint8Array;
  numRegionBytes: number;
  region: ReadableStream<Uint8Array>;
}

/** A forked copy: the header, and the weight region to copy into the new arena. */
export interface ForkedWeights {
  header: Uint8Array;
  region: Uint8Array;
  bytesByTier: Record<WeightTier, number>;
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

/** The GGUF image from R2 or the staged tier. */
export async function readWeights(
  env: Env,
  ref: WeightRef,
  source: Exclude<WeightSource, { tier: "fork" }>,
): Promise<Result<WeightImage>> {
  const bytesByTier = noBytes();
  if (source.tier === "r2") {
    const obj = await env.MODELS.get(ref.r2Key);
    if (!obj) return missing(`model ${ref.model} has no weights in the registry`);
    const bytes = new Uint8Array(await obj.arrayBuffer());
    bytesByTier.r2 = bytes.byteLength;
    return { ok: true, value: { bytes, bytesByTier } };
  }
  const cache = env.WEIGHT_CACHE.getByName(weightCacheName(ref.model, ref.generation));
  const meta = await cache.stage({ r2Key: ref.r2Key });
  if (!meta) return missing(`model ${ref.model} has no weights in the registry`);
  const bytes = await readChunks(meta.sizeBytes, (index) => cache.chunk({ index }));
  if (!bytes) return missing(`the staged weights of ${ref.model} are incomplete`);
  bytesByTier.staged = bytes.byteLength;
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
  return {
    ok: true,
    value: { bytes: image.bytes, bytesByTier, file: image.file, header: image.header },
  };
}

/**
 * NPU-fork: a serving peer's GGUF header and the weight region of its kernel memory as its load
 * built it (one RPC; the region comes as a byte stream, which the 32 MiB limit on an RPC value
 * does not cover). The new instance copies the region into its own arena and builds nothing.
 */
export async function readFork(
  env: Env,
  ref: WeightRef,
  fromInstanceId: string,
  weights: WeightSelection,
): Promise<Result<ForkedWeights>> {
  const lost = (what: string) =>
    failure(
      errorInfo("overloaded", `instance ${fromInstanceId} ${what}`, null, "instance_unavailable"),
    );
  const image = await env.NPU.getByName(npuName(fromInstanceId)).forkImage({
    model: ref.model,
    weights,
  });
  if (!image) return lost(`does not serve ${ref.model}; cannot fork from it`);
  const region = await new Response(image.region)
    .arrayBuffer()
    .then((b) => new Uint8Array(b))
    .catch(() => null);
  if (region?.byteLength !== image.numRegionBytes) {
    return lost(`stopped serving ${ref.model} during a fork`);
  }
  const bytesByTier = noBytes();
  bytesByTier.fork = image.header.byteLength + region.byteLength;
  return { ok: true, value: { header: image.header, region, bytesByTier } };
}
