/**
 * Paged KV cache bookkeeping: a pool of fixed-size blocks, ref-counted, handed to sequences as
 * block tables. Holds no tensors (the Transformer owns the cache memory); pure and serialisable.
 *
 * Capacity outcomes are returned, not thrown: `allocate` returns null when blocks run out.
 */
import { assert } from "../assert.ts";

export type BlockId = number;
export type BlockTable = BlockId[];

export class KvBlockManager {
  private readonly refCounts: Int32Array;
  /** Free block ids; allocation pops from the end (LIFO keeps recently used blocks warm). */
  private readonly freeList: BlockId[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
  ) {
    assert(numBlocks > 0 && blockSize > 0, "block manager needs blocks");
    this.refCounts = new Int32Array(numBlocks);
    this.freeList = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get numFreeBlocks(): number {
    return this.freeList.length;
  }

  /** Blocks needed to hold `numTokens` tokens. */
  blocksFor(numTokens: number): number {
    return Math.ceil(numTokens / this.blockSize);
  }

  /** True when `table` can grow to hold `numTokens` tokens. Changes nothing. */
  canGrow(table: BlockTable, numTokens: number): boolean {
    return this.blocksFor(numTokens) - table.length <= this.freeList.length;
  }

  /** Grows `table` in place to hold `numTokens` tokens. Returns false (and changes nothing) when out of blocks. */
  grow(table: BlockTable, numTokens: number): boolean {
    const need = this.blocksFor(numTokens) - table.length;
    if (need <= 0) return true;
    if (need > this.freeList.length) return false;
    for (let i = 0; i < need; i++) {
      const id = this.freeList.pop() as BlockId;
      assert(this.refCounts[id] === 0, `block ${id} on the free list is in use`);
      this.refCounts[id] = 1;
      table.push(id);
    }
    return true;
  }

  /** Releases every block of `table` and empties it. */
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

  /** Checks the allocator's invariants (tests call this after every operation). */
  checkInvariants(): void {
    const onFree = new Set(this.freeList);
    assert(onFree.size === this.freeList.length, "a block is on the free list twice");
    for (let id = 0; id < this.numBlocks; id++) {
      const rc = this.refCounts[id] as number;
      assert(rc >= 0, `block ${id} has negative ref count`);
      assert((rc === 0) === onFree.has(id), `block ${id} is both free and used, or neither`);
    }
  }
}
