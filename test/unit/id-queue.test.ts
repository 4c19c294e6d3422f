import { describe, expect, it } from "vitest";
import { IdQueue } from "../../shared/id-queue.ts";
import { mulberry32 } from "../../shared/random.ts";

describe("IdQueue", () => {
  it("keeps a Map's insertion order under seeded random push / remove / take-front", () => {
    const rand = mulberry32(11);
    const q = new IdQueue(64);
    const ref = new Map<number, true>(); // a Map iterates in insertion order
    for (let step = 0; step < 5000; step++) {
      const id = Math.floor(rand() * 64);
      const op = rand();
      if (!ref.has(id)) {
        q.push(id);
        ref.set(id, true);
      } else if (op < 0.5) {
        q.remove(id);
        ref.delete(id);
      } else {
        const front = ref.keys().next().value as number;
        expect(q.front()).toBe(front);
        q.remove(front);
        ref.delete(front);
      }
      expect(q.size).toBe(ref.size);
      expect(q.has(id)).toBe(ref.has(id));
    }
    expect([...q]).toEqual([...ref.keys()]);
  });

  it("refuses a double push, removing a non-member and the front of an empty queue", () => {
    const q = new IdQueue(4);
    q.push(2);
    expect(() => q.push(2)).toThrow(/already queued/);
    expect(() => q.remove(3)).toThrow(/not queued/);
    q.remove(2);
    expect(() => q.front()).toThrow(/empty/);
  });
});
