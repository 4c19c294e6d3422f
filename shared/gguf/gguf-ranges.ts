/**
 * Reading parts of a GGUF by byte ranges (R2 range reads in the DOs and the upload routes): the
 * header by a growing prefix, and a compact image of just the tensors a rank holds, relocated so
 * that the rest of the engine reads it as it reads a whole file. Pure apart from the `read`
 * function the host gives.
 */
import {
  GgufError,
  type GgufFile,
  type GgufTensorInfo,
  GgufTruncatedError,
  parseGguf,
} from "./gguf.ts";

/** Reads `length` bytes of the GGUF at absolute byte `offset` (fewer at the end of the object). */
export type ByteRangeRead = (offset: number, length: number) => Promise<Uint8Array>;

/** An object store that answers range reads (R2's `get` with `range`, structurally). */
export interface RangeStore {
  get(
    key: string,
    options: { range: { offset: number; length: number } },
  ): Promise<{ arrayBuffer(): Promise<ArrayBuffer> } | null>;
}

/** Range reads of `key` in `store`. @throws GgufError when the object is missing. */
export function storeRangeRead(store: RangeStore, key: string): ByteRangeRead {
  return async (offset, length) => {
    const obj = await store.get(key, { range: { offset, length } });
    if (!obj) throw new GgufError(`model object ${key} is missing from the registry`);
    return new Uint8Array(await obj.arrayBuffer());
  };
}

/**
 * First prefix read for the GGUF header; doubled until the header parses, so it reads at most
 * twice the header (small, so that it ends before the first tensors of small models' data).
 */
export const HEADER_PROBE_BYTES = 32 * 1024;

/**
 * The GGUF header (metadata and tensor table) from prefix reads, parsed and as bytes, with how
 * many bytes were read;
 * with `fileBytes` (the object's size), every tensor's data must lie within it.
 * @throws GgufError when the header does not parse from the whole object, or a tensor runs past
 * `fileBytes`.
 */
export async function readGgufHeader(
  read: ByteRangeRead,
  fileBytes?: number,
): Promise<{ file: GgufFile; header: Uint8Array; bytesRead: number }> {
  let bytesRead = 0;
  for (let n = HEADER_PROBE_BYTES; ; n *= 2) {
    const bytes = await read(0, n);
    bytesRead += bytes.byteLength;
    try {
      const file = parseGguf(bytes, { headerOnly: true, fileBytes });
      return { file, header: bytes.slice(0, file.dataOffset), bytesRead };
    } catch (e) {
      // the whole file was read, or the header parsed and a tensor lies past fileBytes
      if (bytes.byteLength < n || e instanceof GgufTruncatedError) throw e;
    }
  }
}

/** A compact image: the kept tensors' bytes, and the header with their offsets into it. */
export interface TensorImage {
  /** `header` with every kept tensor's offset into `bytes`; the others point past its end. */
  file: GgufFile;
  bytes: Uint8Array;
  /** GGUF bytes fetched for the tensors (the header's read not included). */
  bytesRead: number;
}

/**
 * Reads the tensors `keep` selects, and nothing else, into one compact buffer: tensors adjacent in
 * the file (apart from alignment padding) are read in one range. Tensors not kept stay in the
 * table (shapes and types still answer the config) with an offset at the buffer's end, so a read
 * of one gets no bytes and fails loudly. @throws GgufError on a short read.
 */
export async function readTensorImage(
  header: GgufFile,
  read: ByteRangeRead,
  keep: (name: string) => boolean,
): Promise<TensorImage> {
  const kept = [...header.tensors.values()]
    .filter((t) => keep(t.name))
    .sort((a, b) => a.offset - b.offset);
  // runs of tensors whose gaps are only alignment padding
  const runs: { offset: number; end: number; tensors: GgufTensorInfo[] }[] = [];
  for (const t of kept) {
    const last = runs[runs.length - 1];
    if (last && t.offset - last.end < header.alignment) {
      last.end = Math.max(last.end, t.offset + t.numBytes);
      last.tensors.push(t);
    } else runs.push({ offset: t.offset, end: t.offset + t.numBytes, tensors: [t] });
  }
  const size = runs.reduce((a, r) => a + (r.end - r.offset), 0);
  const bytes = new Uint8Array(size);
  const moved = new Map<string, number>();
  let at = 0;
  for (const r of runs) {
    const length = r.end - r.offset;
    const got = await read(r.offset, length);
    if (got.byteLength !== length) {
      throw new GgufError(`range ${r.offset}+${length}: read ${got.byteLength} bytes`);
    }
    bytes.set(got, at);
    for (const t of r.tensors) moved.set(t.name, at + (t.offset - r.offset));
    at += length;
  }
  const tensors = new Map<string, GgufTensorInfo>();
  for (const t of header.tensors.values()) {
    tensors.set(t.name, { ...t, offset: moved.get(t.name) ?? size });
  }
  return { file: { ...header, tensors }, bytes, bytesRead: size };
}
