import { describe, expect, it } from "vitest";
import { sampleToken } from "../../../shared/model/sampler.ts";
import { mulberry32 } from "../../../shared/random.ts";

const params = { temperature: 1, topP: 1, topK: 0, seed: 5, numTopLogprobs: 0, logprobs: false };

describe("sampleToken", () => {
  const rng = mulberry32(3);
  const logits = Float32Array.from({ length: 50 }, () => rng() * 4);

  it("is greedy at temperature 0 with exact log-softmax logprobs", () => {
    const r = sampleToken(
      logits,
      0,
      50,
      { ...params, temperature: 0, numTopLogprobs: 3, logprobs: true },
      0,
      0,
    );
    const max = Math.max(...logits);
    expect(logits[r.tokenId]).toBe(max);
    const lse = Math.log(Array.from(logits).reduce((a, l) => a + Math.exp(l), 0));
    expect(r.logprob).toBeCloseTo(max - lse, 6);
    expect(r.topLogprobs.map((t) => t.tokenId)[0]).toBe(r.tokenId);
    expect(r.topLogprobs).toHaveLength(3);
  });

  it("draws the same token for the same (seed, choice, position) and differs across choices", () => {
    const a = Array.from(
      { length: 40 },
      (_, p) => sampleToken(logits, 0, 50, params, 0, p).tokenId,
    );
    const b = Array.from(
      { length: 40 },
      (_, p) => sampleToken(logits, 0, 50, params, 0, p).tokenId,
    );
    const c = Array.from(
      { length: 40 },
      (_, p) => sampleToken(logits, 0, 50, params, 1, p).tokenId,
    );
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it("follows the softmax distribution and respects top-k and top-p", () => {
    const l = Float32Array.from([2, 1, 0, -1]);
    const counts = [0, 0, 0, 0];
    for (let p = 0; p < 20000; p++) counts[sampleToken(l, 0, 4, params, 0, p).tokenId]!++;
    const z = [2, 1, 0, -1].reduce((a, x) => a + Math.exp(x), 0);
    counts.forEach((c, i) => {
      expect(c / 20000).toBeCloseTo(Math.exp([2, 1, 0, -1][i]!) / z, 1);
    });
    for (let p = 0; p < 500; p++) {
      expect(sampleToken(l, 0, 4, { ...params, topK: 2 }, 0, p).tokenId).toBeLessThan(2);
      // top-p 0.5: token 0 alone holds 64% of the mass
      expect(sampleToken(l, 0, 4, { ...params, topP: 0.5 }, 0, p).tokenId).toBe(0);
    }
  });
});
