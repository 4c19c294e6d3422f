/**
 * The KV blocks an Npu pins for explicit context caches: cacheId -> a block table holding one
 * reference on each full block of the cached prefix, and its expiry. While pinned, those blocks
 * cannot be evicted, so any prompt that starts with the prefix reuses them (prefix cache).
 */
import type { KvBlockManager } from "../shared/engine/kv-block-manager.ts";

export class ContextPins {
  private readonly pinned = new Map<string, { table: number[]; expiresAt: number }>();

  /** Takes references on the cached full blocks of `promptIds` (replacing an older pin). */
  pin(
    blocks: KvBlockManager,
    cacheId: string,
    promptIds: readonly number[],
    expiresAt: number,
  ): number {
    this.unpin(blocks, cacheId);
    const table: number[] = [];
    blocks.acquirePrefix(table, promptIds, promptIds.length);
    this.pinned.set(cacheId, { table, expiresAt });
    return table.length * blocks.blockSize;
  }

  unpin(blocks: KvBlockManager | undefined, cacheId: string): boolean {
    const p = this.pinned.get(cacheId);
    if (!p) return false;
    this.pinned.delete(cacheId);
    blocks?.free(p.table);
    return true;
  }

  /** Unpins every cache expired at `now`. */
  expire(blocks: KvBlockManager | undefined, now: number): void {
    for (const [id, p] of this.pinned) if (p.expiresAt <= now) this.unpin(blocks, id);
  }

  /** The next expiry, or null when nothing is pinned. */
  nextExpiry(): number | null {
    let next: number | null = null;
    for (const p of this.pinned.values())
      next = next === null ? p.expiresAt : Math.min(next, p.expiresAt);
    return next;
  }
}
