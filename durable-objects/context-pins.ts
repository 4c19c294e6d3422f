/**
 * The KV blocks an Npu pins for explicit context caches: cacheId -> a block table holding one
 * reference on each full block of the cached prefix, and its expiry. While pinned, those blocks
 * cannot be evicted, so any prompt that starts with the prefix (under the same cache salt)
 * reuses them (prefix cache).
 */
import type { Engine } from "../shared/engine/engine.ts";
import type { ModelInstance } from "../shared/engine/instance.ts";
import { GREEDY } from "../shared/engine/sequence.ts";
import type { Result } from "../shared/errors.ts";
import type { KvHandoff } from "./kv-handoff.ts";

export class ContextPins {
  private readonly pinned = new Map<string, { table: number[]; expiresAt: number }>();

  /**
   * Computes a prompt in the engine loop (its KV held) and pins its full blocks for `cacheId`
   * until `expiresAt`; returns how many tokens the pinned blocks hold.
   */
  async computeAndPin(
    instance: ModelInstance,
    handoff: KvHandoff,
    a: { cacheId: string; promptIds: number[]; cacheSalt: string; expiresAt: number },
  ): Promise<Result<{ numPinnedTokens: number }>> {
    const seqId = `${a.cacheId}/pin`;
    const computed = await handoff.computePrompt(instance, seqId, a.promptIds, GREEDY, a.cacheSalt);
    if (!computed.ok) return computed;
    const engine = instance.engine;
    const numPinnedTokens = this.pin(engine, a.cacheId, a.promptIds, a.cacheSalt, a.expiresAt);
    engine.releaseHeld(seqId);
    return { ok: true, value: { numPinnedTokens } };
  }

  /** Takes references on the cached full blocks of `promptIds` (replacing an older pin). */
  pin(
    engine: Engine,
    cacheId: string,
    promptIds: readonly number[],
    cacheSalt: string,
    expiresAt: number,
  ): number {
    this.unpin(engine, cacheId);
    const table = engine.pinPrefix(promptIds, cacheSalt);
    this.pinned.set(cacheId, { table, expiresAt });
    return table.length * engine.blockSize;
  }

  unpin(engine: Engine | undefined, cacheId: string): boolean {
    const p = this.pinned.get(cacheId);
    if (!p) return false;
    this.pinned.delete(cacheId);
    engine?.unpinBlocks(p.table);
    return true;
  }

  /** Unpins every cache expired at `now`. */
  expire(engine: Engine | undefined, now: number): void {
    for (const [id, p] of this.pinned) if (p.expiresAt <= now) this.unpin(engine, id);
  }

  /** Forgets every pin (their engine was replaced; its blocks went with it). */
  clear(): void {
    this.pinned.clear();
  }

  /** The next expiry, or null when nothing is pinned. */
  nextExpiry(): number | null {
    let next: number | null = null;
    for (const p of this.pinned.values())
      next = next === null ? p.expiresAt : Math.min(next, p.expiresAt);
    return next;
  }
}
