/**
 * The chained key of a full KV block: a 64-bit FNV-1a hash of its parent block's key and its
 * token ids, as 16 hex digits, so a key names a whole prefix. The KV block manager keys its
 * cache with it and the JobExecutor's prefix tree its edges. Pure.
 */

/** Chained 64-bit FNV-1a key of a full block: parent key + the block's token ids. */
export function blockKey(
  parent: string,
  tokenIds: readonly number[],
  from: number,
  to: number,
): string {
  let h1 = 0x811c9dc5;
  let h2 = 0xcbf29ce4;
  for (let i = 0; i < parent.length; i++) {
    const c = parent.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x0100019d);
  }
  for (let i = from; i < to; i++) {
    const t = tokenIds[i] as number;
    h1 = Math.imul(h1 ^ t, 0x01000193);
    h2 = Math.imul(h2 ^ (t + 0x9e37), 0x0100019d);
  }
  return hex32(h1) + hex32(h2);
}

const HEX_BYTE = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

/** `h` as 8 lowercase hex digits (what `(h >>> 0).toString(16).padStart(8, "0")` gives). */
function hex32(h: number): string {
  return (
    (HEX_BYTE[(h >>> 24) & 255] as string) +
    (HEX_BYTE[(h >>> 16) & 255] as string) +
    (HEX_BYTE[(h >>> 8) & 255] as string) +
    (HEX_BYTE[h & 255] as string)
  );
}
