/**
 * The simulator's event queue: events in virtual time (ms), earliest first; events at the same
 * time in the order they were pushed (a sequence number breaks ties), so a run is a function of
 * its inputs alone. A binary min-heap. Pure.
 */

interface Entry<T> {
  at: number;
  order: number;
  event: T;
}

export class EventQueue<T> {
  private readonly heap: Entry<T>[] = [];
  private pushed = 0;
  /** The time of the last event popped: the virtual clock. */
  now = 0;

  get size(): number {
    return this.heap.length;
  }

  /** Queues `event` at `at` ms; an event in the past is a bug in the caller. */
  push(at: number, event: T): void {
    if (!(at >= this.now)) throw new RangeError(`event at ${at} ms is before now (${this.now} ms)`);
    const h = this.heap;
    h.push({ at, order: this.pushed++, event });
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!earlier(h[i] as Entry<T>, h[p] as Entry<T>)) break;
      [h[i], h[p]] = [h[p] as Entry<T>, h[i] as Entry<T>];
      i = p;
    }
  }

  /** The next event, advancing the clock to its time; null when none is left. */
  pop(): { at: number; event: T } | null {
    const h = this.heap;
    const top = h[0];
    if (top === undefined) return null;
    const last = h.pop() as Entry<T>;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && earlier(h[l] as Entry<T>, h[m] as Entry<T>)) m = l;
        if (r < h.length && earlier(h[r] as Entry<T>, h[m] as Entry<T>)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m] as Entry<T>, h[i] as Entry<T>];
        i = m;
      }
    }
    this.now = top.at;
    return { at: top.at, event: top.event };
  }
}

function earlier<T>(a: Entry<T>, b: Entry<T>): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}
