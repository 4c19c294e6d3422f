/**
 * Reading a model's GGUF image for an Npu from one weight tier: the R2 registry (cold), the
 * model's WeightCache (staged in DO storage), or, for NPU-fork, the weight region a serving peer
 * built in its kernel memory (with the GGUF header to rebind it; both ends of its stream are
 * here: regionStream on the source, copyRegion on the target). Each read says how many bytes
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

/** A fork's source, answered: the header, and the weight region still to be copied. */
export interface ForkedWeights {
  /** The source instance's id. */
  from: string;
  header: Uint8Array;
  numRegionBytes: number;
  region: ReadableStream<Uint8Array>;
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

/** A fork source that cannot be copied from (not serving the model, or stopped mid-copy). */
export function forkLost(fromInstanceId: string, what: string): Result<never> {
  return failure(
    errorInfo("overloaded", `instance ${fromInstanceId} ${what}`, null, "instance_unavailable"),
  );
}

/**
 * NPU-fork: a serving peer's GGUF header and the weight region of its kernel memory as its load
 * built it (one RPC; the region comes as a byte stream, which the 32 MiB limit on an RPC value
 * does not cover). The stream is left unread: the new instance copies it straight into its own
 * arena (copyRegion) and builds nothing.
 */
export async function readFork(
  env: Env,
  ref: WeightRef,
  fromInstanceId: string,
  weights: WeightSelection,
): Promise<Result<ForkedWeights>> {
  const image = await env.NPU.getByName(npuName(fromInstanceId)).forkImage({
    model: ref.model,
    weights,
  });
  if (!image) return forkLost(fromInstanceId, `does not serve ${ref.model}; cannot fork from it`);
  const bytesByTier = noBytes();
  bytesByTier.fork = image.header.byteLength + image.numRegionBytes;
  return { ok: true, value: { ...image, from: fromInstanceId, bytesByTier } };
}

/** Bytes per chunk of a streamed weight region. */
const REGION_CHUNK_BYTES = 4 * 2 ** 20;

/**
 * The weight region [from, from + n) of a runtime's memory as a stream of views, copied only by
 * the RPC that carries it. The region is written once, at load, and the buffer outlives an unbind
 * (a new runtime gets a new memory), so a fork in flight reads the weights as they were built.
 * Locally the RPC hands the target 4 KiB chunks whatever this size; copyRegion reads them back
 * in large pieces.
 */
export function regionStream(
  buffer: ArrayBuffer,
  from: number,
  n: number,
): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= n) return c.close();
      const len = Math.min(REGION_CHUNK_BYTES, n - at);
      c.enqueue(new Uint8Array(buffer, from + at, len));
      at += len;
    },
  });
}

/** Bytes per read of a forked region: large reads, so few async hops per copy. */
const COPY_READ_BYTES = 4 * 2 ** 20;

/**
 * Reads a forked weight region into `into` (a view of the new arena), exactly filling it, through
 * one scratch buffer of COPY_READ_BYTES that each read refills (BYOB, `readAtLeast`): no
 * region-sized intermediate buffer. False when the stream ends early, runs long or fails.
 */
export async function copyRegion(
  region: ReadableStream<Uint8Array>,
  into: Uint8Array,
): Promise<boolean> {
  const reader = region.getReader({ mode: "byob" });
  let scratch = new Uint8Array(Math.min(COPY_READ_BYTES, Math.max(into.byteLength, 1)));
  let at = 0;
  let ok = false;
  try {
    while (at < into.byteLength) {
      const want = Math.min(scratch.byteLength, into.byteLength - at);
      const r = await reader.readAtLeast(want, new Uint8Array(scratch.buffer, 0, want));
      if (r.done || !r.value) return false;
      into.set(r.value, at);
      at += r.value.byteLength;
      scratch = new Uint8Array(r.value.buffer);
    }
    // the region must end here: one more read sees the end (or bytes past it)
    ok = (await reader.read(new Uint8Array(scratch.buffer, 0, 1))).done;
    return ok;
  } catch {
    return false;
  } finally {
    reader.releaseLock();
    if (!ok) await region.cancel().catch(() => {});
  }
}

/**
 * The fill of a fork (createInstance): the region was copied in already at `copiedAt`, where a
 * fresh arena's first allocations go; the layout must have put the weights exactly there.
 */
export function filled(copiedAt: number, copiedBytes: number) {
  return (fromByte: number, numBytes: number): void => {
    if (fromByte !== copiedAt || numBytes !== copiedBytes) {
      throw new Error(
        `the forked weights are ${copiedBytes} bytes at ${copiedAt}; this layout puts ${numBytes} at ${fromByte}`,
      );
    }
  };
}
