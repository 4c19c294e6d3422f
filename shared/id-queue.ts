/**
 * A FIFO set of the integer ids 0..capacity-1: append at the back, take the front, remove any
 * member, all O(1) (a doubly linked list over typed arrays; a Map used as a queue pays for the
 * holes its front deletions leave). The KV block manager's free list. Pure.
 */
import { assert } from "./assert.ts";

const NONE = -1;

export class IdQueue {
  private readonly next: Int32Array;
  private readonly prev: Int32Array;
  private readonly member: Uint8Array;
  private head = NONE;
  private tail = NONE;
  size = 0;

  constructor(readonly capacity: number) {
    this.next = new Int32Array(capacity);
    this.prev = new Int32Array(capacity);
    this.member = new Uint8Array(capacity);
  }

  has(id: number): boolean {
    return this.member[id] === 1;
  }

  /** The oldest member; the queue must not be empty. */
  front(): number {
    assert(this.head !== NONE, "front of an empty queue");
    return this.head;
  }

  push(id: number): void {
    assert(!this.has(id), `id ${id} is already queued`);
    this.prev[id] = this.tail;
    this.next[id] = NONE;
    if (this.tail === NONE) this.head = id;
    else this.next[this.tail] = id;
    this.tail = id;
    this.member[id] = 1;
    this.size++;
  }

  remove(id: number): void {
    assert(this.has(id), `id ${id} is not queued`);
    const p = this.prev[id] as number;
    const n = this.next[id] as number;
    if (p === NONE) this.head = n;
    else this.next[p] = n;
    if (n === NONE) this.tail = p;
    else this.prev[n] = p;
    this.member[id] = 0;
    this.size--;
  }

  /** The members, oldest first. */
  *[Symbol.iterator](): IterableIterator<number> {
    for (let id = this.head; id !== NONE; id = this.next[id] as number) yield id;
  }
}
