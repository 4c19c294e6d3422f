/**
 * Range reads of a model's GGUF in the R2 registry: the header (metadata and tensor table) by a
 * growing prefix, and any byte range (an expert rank's tensors at the header's offsets).
 */
import { GgufError, type GgufFile, parseGguf } from "../shared/model/gguf.ts";
import type { Env } from "./env.ts";

/** First prefix read for the GGUF header; doubled until the header parses. */
const HEADER_PROBE_BYTES = 256 * 1024;

/** Reads `length` bytes at `offset` of an R2 object. */
export async function readRange(env: Env, key: string, offset: number, length: number) {
  const obj = await env.MODELS.get(key, { range: { offset, length } });
  if (!obj) throw new GgufError(`model object ${key} is missing from the registry`);
  return new Uint8Array(await obj.arrayBuffer());
}

/** The GGUF header (metadata and tensor table) from prefix reads. */
export async function readHeader(env: Env, key: string): Promise<GgufFile> {
  for (let n = HEADER_PROBE_BYTES; ; n *= 2) {
    const bytes = await readRange(env, key, 0, n);
    try {
      return parseGguf(bytes, { headerOnly: true });
    } catch (e) {
      if (bytes.byteLength < n) throw e; // the whole file was read: a real error
    }
  }
}
