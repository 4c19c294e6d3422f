/**
 * Range reads of a model's GGUF in the R2 registry (shared/gguf/gguf-ranges.ts over the MODELS
 * bucket): the header (metadata and tensor table) by a growing prefix, any byte range (an expert
 * rank's tensors at the header's offsets), and an attention rank's compact image of every tensor
 * but the experts.
 */

import type { GgufFile } from "../shared/gguf/gguf.ts";
import {
  readGgufHeader,
  readTensorImage,
  storeRangeRead,
  type TensorImage,
} from "../shared/gguf/gguf-ranges.ts";
import { isExpertTensor } from "../shared/model/expert-shard.ts";
import type { Env } from "./env.ts";

/** Reads `length` bytes at `offset` of an R2 object. */
export function readRange(env: Env, key: string, offset: number, length: number) {
  return storeRangeRead(env.MODELS, key)(offset, length);
}

/** The GGUF header (metadata and tensor table) from prefix reads. */
export async function readHeader(env: Env, key: string): Promise<GgufFile> {
  return (await readGgufHeader(storeRangeRead(env.MODELS, key))).file;
}

/**
 * An attention rank's weights: the header, then every tensor but the MoE experts by range reads.
 * `bytesRead` counts both (everything this rank fetched from R2).
 */
export async function readAttentionImage(
  env: Env,
  key: string,
): Promise<TensorImage & { header: Uint8Array }> {
  const read = storeRangeRead(env.MODELS, key);
  const header = await readGgufHeader(read);
  const image = await readTensorImage(header.file, read, (name) => !isExpertTensor(name));
  return { ...image, header: header.header, bytesRead: header.bytesRead + image.bytesRead };
}
