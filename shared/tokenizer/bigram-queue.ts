/**
 * Max-priority queue of candidate merges for the SPM and BPE merge loops: highest priority first,
 * ties to the smallest left index (llm_bigram_spm / llm_bigram_bpe comparators; BPE pushes the
 * negated merge rank). Parallel arrays, no per-entry objects. Pure.
 */
export class BigramQueue {
  private priority: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private size: number[] = [];
  length = 0;
  /** The entry popped last. */
  topLeft = 0;
  topRight = 0;
  topSize = 0;

  private before(i: number, j: number): boolean {
    const si = this.priority[i] as number;
    const sj = this.priority[j] as number;
    return si > sj || (si === sj && (this.left[i] as number) < (this.left[j] as number));
  }

  private swap(i: number, j: number): void {
    swapIn(this.priority, i, j);
    swapIn(this.left, i, j);
    swapIn(this.right, i, j);
    swapIn(this.size, i, j);
  }

  /** Empties the queue (keeps its arrays for reuse). */
  clear(): void {
    this.length = 0;
  }

  push(priority: number, left: number, right: number, size: number): void {
    let i = this.length++;
    this.priority[i] = priority;
    this.left[i] = left;
    this.right[i] = right;
    this.size[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the best entry into topLeft/topRight/topSize. Call only when length > 0. */
  pop(): void {
    this.topLeft = this.left[0] as number;
    this.topRight = this.right[0] as number;
    this.topSize = this.size[0] as number;
    const last = --this.length;
    if (last > 0) {
      this.priority[0] = this.priority[last] as number;
      this.left[0] = this.left[last] as number;
      this.right[0] = this.right[last] as number;
      this.size[0] = this.size[last] as number;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < last && this.before(l, best)) best = l;
        if (r < last && this.before(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
  }
}

function swapIn(a: number[], i: number, j: number): void {
  const t = a[i] as number;
  a[i] = a[j] as number;
  a[j] = t;
}
