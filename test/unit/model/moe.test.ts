import { describe, expect, it } from "vitest";
import { routeTopK } from "../../../shared/model/moe.ts";
import { mulberry32 } from "../../../shared/random.ts";

describe("routeTopK", () => {
  it("matches a brute-force sort of softmax probabilities, renormalised", () => {
    const rng = mulberry32(7);
    for (let trial = 0; trial < 500; trial++) {
      const E = 2 + Math.floor(rng() * 14);
      const k = 1 + Math.floor(rng() * Math.min(E, 4));
      const logits = Float32Array.from({ length: E }, () => (rng() - 0.5) * 8);
      if (trial % 10 === 0) logits[1] = logits[0]!; // ties
      const ref = Array.from(logits, (l, e) => ({ e, p: Math.exp(l) }));
      const z = ref.reduce((a, b) => a + b.p, 0);
      ref.forEach((r) => {
        r.p /= z;
      });
      ref.sort((a, b) => b.p - a.p || a.e - b.e);
      const top = ref.slice(0, k);
      const sum = top.reduce((a, b) => a + b.p, 0);
      const ids = new Int32Array(k);
      const w = new Float32Array(k);
      routeTopK(Float32Array.from(logits), 0, E, k, ids, w, 0);
      expect(Array.from(ids)).toEqual(top.map((t) => t.e));
      top.forEach((t, i) => {
        expect(w[i]).toBeCloseTo(t.p / sum, 5);
      });
    }
  });
});
