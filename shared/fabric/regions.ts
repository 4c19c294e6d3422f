/**
 * The fabric (xDeepServe's XCCL over DO storage): byte regions owned by a DO, written and read
 * point to point, with sequence numbers so a reader can wait for a version, and explicit free.
 * This module is the pure part: region metadata, chunking to the storage value limit, and the
 * per-kind counters every owner reports. The host part (durable-objects/fabric-host.ts) keeps
 * durable regions in the owner's SQLite storage (surviving restarts until freed) and in-memory
 * regions (per-step activations) in a Map.
 */

export type RegionKind = "durable" | "memory";

/** Largest stored value: the platform allows 2 MB for key + value; chunks stay at 1 MiB. */
export const FABRIC_CHUNK_BYTES = 2 ** 20;

export interface RegionRef {
  /** DO name of the owner (where the bytes live). */
  owner: string;
  regionId: string;
  kind: RegionKind;
  seq: number;
  byteLength: number;
}

export interface RegionMeta {
  regionId: string;
  kind: RegionKind;
  seq: number;
  byteLength: number;
  numChunks: number;
  writtenAt: number;
}

export interface KindCounters {
  numWrites: number;
  numReads: number;
  numFrees: number;
  bytesWritten: number;
  bytesRead: number;
  liveRegions: number;
  liveBytes: number;
}

export type FabricStats = Record<RegionKind, KindCounters>;

export function emptyStats(): FabricStats {
  const zero = (): KindCounters => ({
    numWrites: 0,
    numReads: 0,
    numFrees: 0,
    bytesWritten: 0,
    bytesRead: 0,
    liveRegions: 0,
    liveBytes: 0,
  });
  return { durable: zero(), memory: zero() };
}

/** Splits bytes into views of at most `size` bytes (no copies). */
export function chunkBytes(bytes: Uint8Array, size = FABRIC_CHUNK_BYTES): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let off = 0; off < bytes.byteLength; off += size) {
    out.push(bytes.subarray(off, Math.min(off + size, bytes.byteLength)));
  }
  return out;
}

/** Joins chunks back into one buffer of `byteLength` bytes. @throws Error when they do not add up. */
export function joinChunks(chunks: readonly Uint8Array[], byteLength: number): Uint8Array {
  const out = new Uint8Array(byteLength);
  let off = 0;
  for (const c of chunks) {
    if (off + c.byteLength > byteLength) throw new Error("fabric region chunks exceed its length");
    out.set(c, off);
    off += c.byteLength;
  }
  if (off !== byteLength)
    throw new Error(`fabric region is missing bytes (${off} of ${byteLength})`);
  return out;
}

/** Region ids are plain strings made here, so every user names regions the same way. */
export function kvRegionId(taskId: string): string {
  return `kv/${taskId}`;
}

export function isKvRegion(regionId: string): boolean {
  return regionId.startsWith("kv/");
}
