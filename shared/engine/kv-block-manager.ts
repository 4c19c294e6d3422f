/**
 * Paged KV cache bookkeeping: a pool of fixed-size blocks, ref-counted, handed to sequences as
 * block tables, with implicit prefix caching. Holds no tensors (the Transformer owns the cache
 * memory); pure.
 *
 * Prefix caching (DeepFlow's RTC, vLLM's automatic prefix caching): once a block is full, it is
 * keyed by a hash of its tokens chained with its parent block's key, so a key names a whole
 * prefix. A freed block keeps its key and contents until it is reused for something else; free
 * blocks are reused oldest-freed first, so recently used prefixes stay cached longest. A new
 * sequence takes every leading full block of its prompt whose key is cached (ref count + 1), and
 * computes only the rest. Because a row's K/V depend only on the tokens before it (bit for bit,
 * whatever batch computed it), a reused block is exactly what recomputation would give.
 *
 * Cache salts (vLLM's `cache_salt`): a sequence's chain of keys starts at its salt instead of "",
 * so prompts with different salts share no key, and each cached block remembers the salt it was
 * computed under: a hit needs that exact salt, so not even a forged hash collision can hand one
 * salt's block (one tenant's prefix) to another. "" is the unsalted cache.
 *
 * Capacity outcomes are returned, not thrown: `grow` returns false when blocks run out.
 *
 * Costs (the simulator runs this every step of every instance): the free list is an `IdQueue`;
 * a table's keyed blocks are a prefix of it (keyed only after the parent, acquired keyed at the
 * front, grown unkeyed at the back, never forgotten while in use), so `commitFull` bisects to the
 * first unkeyed one; a token array's chain of keys is memoised (tokens are only appended).
 */
import { assert } from "../assert.ts";
import { blockKey } from "../block-key.ts";
import { IdQueue } from "../id-queue.ts";

export type BlockId = number;
export type BlockTable = BlockId[];

export class KvBlockManager {
  private readonly refCounts: Int32Array;
  /** Free blocks in the order they were freed: reuse the oldest. */
  private readonly freeList: IdQueue;
  /** Keys of each token array's full blocks, computed once (tokens are only appended). */
  private readonly chains = new WeakMap<readonly number[], { salt: string; keys: string[] }>();
  /** Prefix key of each full, cached block ("" when the block holds no reusable prefix). */
  private readonly keys: string[];
  private readonly byKey = new Map<string, BlockId>();
  /** The token ids of each cached block, to rule out hash collisions on a hit. */
  private readonly tokens: (number[] | null)[];
  /** The cache salt of each cached block's chain, compared exactly on a hit. */
  private readonly salts: string[];
  /** Prefix-cache statistics. */
  numQueriedTokens = 0;
  numHitTokens = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    /** The key function; tests pass one that collides, to check that hits never cross salts. */
    private readonly keyOfBlock: typeof blockKey = blockKey,
  ) {
    assert(numBlocks > 0 && blockSize > 0, "block manager needs blocks");
    this.refCounts = new Int32Array(numBlocks);
    this.freeList = new IdQueue(numBlocks);
    for (let i = 0; i < numBlocks; i++) this.freeList.push(i);
    this.keys = new Array<string>(numBlocks).fill("");
    this.tokens = new Array<number[] | null>(numBlocks).fill(null);
    this.salts = new Array<string>(numBlocks).fill("");
  }

  get numFreeBlocks(): number {
    return this.freeList.size;
  }

  /** Cached full blocks (free or in use) that a new prompt could reuse. */
  get numCachedBlocks(): number {
    return this.byKey.size;
  }

  /** Blocks needed to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** True when `table` can grow to hold `numTokens` tokens. Changes nothing. */
  canGrow(table: BlockTable, numTokens: number): boolean {
    return this.blocksFor(numTokens) - table.length <= this.freeList.size;
  }

  /** Grows `table` in place to hold `numTokens` tokens. Returns false (and changes nothing) when out of blocks. */
  grow(table: BlockTable, numTokens: number): boolean {
    const need = this.blocksFor(numTokens) - table.length;
    if (need <= 0) return true;
    if (need > this.freeList.size) return false;
    for (let i = 0; i < need; i++) {
      const id = this.freeList.front();
      this.freeList.remove(id);
      assert(this.refCounts[id] === 0, `block ${id} on the free list is in use`);
      this.forget(id); // its old contents are about to be overwritten
      this.refCounts[id] = 1;
      table.push(id);
    }
    return true;
  }

  /**
   * Takes the cached blocks of the longest prefix of `tokenIds[0, maxTokens)` made of full blocks
   * computed under `cacheSalt`, appending them to the (empty) `table`. Returns the number of
   * tokens they hold.
   */
  acquirePrefix(
    table: BlockTable,
    tokenIds: readonly number[],
    maxTokens: number,
    cacheSalt = "",
  ): number {
    assert(table.length === 0, "prefix lookup on a sequence that already has blocks");
    const bs = this.blockSize;
    const numFull = Math.floor(Math.min(maxTokens, tokenIds.length) / bs);
    for (let b = 0; b < numFull; b++) {
      const key = this.chainKey(tokenIds, b, cacheSalt);
      const id = this.byKey.get(key);
      if (id === undefined || this.salts[id] !== cacheSalt) break;
      if (!this.sameTokens(id, tokenIds, b * bs)) break;
      if (this.refCounts[id] === 0) this.freeList.remove(id);
      this.refCounts[id] = (this.refCounts[id] as number) + 1;
      table.push(id);
    }
    const hit = table.length * bs;
    this.numQueriedTokens += Math.min(maxTokens, tokenIds.length);
    this.numHitTokens += hit;
    return hit;
  }

  /**
   * Registers the blocks of `table` that `numComputedTokens` has filled, under the sequence's
   * `cacheSalt`, so later prompts with that salt can reuse them. Call after each step; blocks
   * already keyed are skipped.
   */
  commitFull(
    table: BlockTable,
    tokenIds: readonly number[],
    numComputedTokens: number,
    cacheSalt = "",
  ): void {
    const bs = this.blockSize;
    const numFull = Math.min(Math.floor(numComputedTokens / bs), table.length);
    // the keyed blocks are a prefix of the table: skip them by bisection
    let lo = 0;
    let hi = numFull;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.keys[table[mid] as BlockId] !== "") lo = mid + 1;
      else hi = mid;
    }
    for (let b = lo; b < numFull; b++) {
      const id = table[b] as BlockId;
      if (this.keys[id] !== "") continue;
      const parent = b === 0 ? cacheSalt : (this.keys[table[b - 1] as BlockId] as string);
      if (b > 0 && parent === "") return; // a parent that is not cached cannot anchor a key
      const key = this.chainKey(tokenIds, b, cacheSalt);
      if (this.byKey.has(key)) continue; // another block already holds this prefix
      this.keys[id] = key;
      this.tokens[id] = tokenIds.slice(b * bs, (b + 1) * bs);
      this.salts[id] = cacheSalt;
      this.byKey.set(key, id);
    }
  }

  /** Releases every block of `table` and empties it. Cached blocks stay reusable until evicted. */
  free(table: BlockTable): void {
    for (const id of table) {
      assert(id >= 0 && id < this.numBlocks, `bad block id ${id}`);
      const rc = (this.refCounts[id] as number) - 1;
      assert(rc >= 0, `block ${id} freed twice`);
      this.refCounts[id] = rc;
      if (rc === 0) this.freeList.push(id);
    }
    table.length = 0;
  }

  refCount(id: BlockId): number {
    return this.refCounts[id] as number;
  }

  /** The prefix key of a cached block, or null when the block holds no reusable prefix. */
  keyOf(id: BlockId): string | null {
    return this.keys[id] || null;
  }

  /** Drops every cached prefix (e.g. after the weights changed). */
  resetPrefixCache(): void {
    for (const id of this.byKey.values()) this.forget(id);
  }

  /**
   * The chained key of full block `b` of `tokenIds` under `salt` (its parent's key, then its
   * tokens), from the array's memoised chain, extended as far as `b`.
   */
  private chainKey(tokenIds: readonly number[], b: number, salt: string): string {
    let chain = this.chains.get(tokenIds);
    if (!chain || chain.salt !== salt) {
      chain = { salt, keys: [] };
      this.chains.set(tokenIds, chain);
    }
    const keys = chain.keys;
    const bs = this.blockSize;
    for (let i = keys.length; i <= b; i++) {
      const parent = i === 0 ? salt : (keys[i - 1] as string);
      keys.push(this.keyOfBlock(parent, tokenIds, i * bs, (i + 1) * bs));
    }
    return keys[b] as string;
  }

  private forget(id: BlockId): void {
    const key = this.keys[id] as string;
    if (key !== "" && this.byKey.get(key) === id) this.byKey.delete(key);
    this.keys[id] = "";
    this.tokens[id] = null;
    this.salts[id] = "";
  }

  private sameTokens(id: BlockId, tokenIds: readonly number[], from: number): boolean {
    const t = this.tokens[id];
    if (!t) return false;
    for (let i = 0; i < t.length; i++) if (t[i] !== tokenIds[from + i]) return false;
    return true;
  }

  /** Checks the allocator's invariants (tests call this after every operation). */
  checkInvariants(): void {
    for (let id = 0; id < this.numBlocks; id++) {
      const rc = this.refCounts[id] as number;
      assert(rc >= 0, `block ${id} has negative ref count`);
      assert((rc === 0) === this.freeList.has(id), `block ${id} is both free and used, or neither`);
      const key = this.keys[id] as string;
      if (key !== "") assert(this.byKey.get(key) === id, `block ${id}'s key does not map back`);
      assert((key !== "") === (this.tokens[id] !== null), `block ${id} is half cached`);
      if (key === "") assert(this.salts[id] === "", `uncached block ${id} keeps a salt`);
    }
    for (const [key, id] of this.byKey)
      assert(this.keys[id] === key, `key ${key} maps to a block without it`);
    assert([...this.freeList].length === this.freeList.size, "free list miscounted");
  }
}
