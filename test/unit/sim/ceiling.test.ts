import { describe, expect, it } from "vitest";
import { bestCachedTokens, soloTtftMs } from "../../../shared/sim/ceiling.ts";
import { simulate } from "../../../shared/sim/cluster.ts";
import type { ModelCard } from "../../../shared/sim/cost-model.ts";
import { testCard } from "../../helpers/sim-card.ts";

function ids(n: number, from: number): number[] {
  return Array.from({ length: n }, (_, i) => 3 + ((from + i) % 30_000));
}

describe("soloTtftMs", () => {
  const card: ModelCard = {
    ...testCard(4),
    requestOverheadMs: 3,
    promptTokenOverheadMs: 0.01,
    stepOverheadMs: 0.25,
    tokenOverheadMs: 0.125,
  };

  it("is the simulator's TTFT of a lone request on an idle instance", () => {
    // 1, 511, 512, 513 and 1500 tokens: one chunk, a full one, a one-token tail, three chunks
    for (const n of [1, 511, 512, 513, 1500]) {
      const res = simulate([{ id: "x", arrivalMs: 0, promptIds: ids(n, 0), outputTokens: 2 }], {
        card,
        numInstances: 1,
        policy: "least-loaded",
      });
      const o = res.outcomes[0];
      expect(o?.numCachedTokens).toBe(0);
      expect(soloTtftMs(card, n)).toBeCloseTo((o?.firstTokenMs ?? 0) - (o?.arrivalMs ?? 0), 9);
    }
  });

  it("starts from the cached prefix, as the Scheduler does", () => {
    // b repeats a's 700-token prompt and adds 600: it arrives after a finished, so a's full
    // blocks are cached and b computes the rest in 512-token chunks from there
    const a = ids(700, 0);
    const b = [...a, ...ids(600, 5000)];
    const res = simulate(
      [
        { id: "a", arrivalMs: 0, promptIds: a, outputTokens: 1 },
        { id: "b", arrivalMs: 10_000, promptIds: b, outputTokens: 1 },
      ],
      { card, numInstances: 1, policy: "least-loaded" },
    );
    const o = res.outcomes[1];
    expect(o?.numCachedTokens).toBe(688); // 43 full blocks of 16
    const ttft = (o?.firstTokenMs ?? 0) - (o?.arrivalMs ?? 0);
    expect(soloTtftMs(card, b.length, 688)).toBeCloseTo(ttft, 9);
    expect(soloTtftMs(card, b.length)).toBeGreaterThan(ttft);
  });
});

describe("bestCachedTokens", () => {
  it("grants the longest prefix shared with an earlier row, in whole KV blocks", () => {
    const rows = [
      { id: "a", inputLength: 1500, hashIds: [1, 2, 3] },
      // shares [1, 2] with a: 1024 tokens
      { id: "b", inputLength: 1400, hashIds: [1, 2, 4] },
      // shares [1] but is shorter than a block: its last token is always computed, 299 -> 288
      { id: "c", inputLength: 300, hashIds: [1] },
      // shares [1, 2, 3] with a, which ends 476 tokens into block 3: 1500 tokens, 1488 in blocks
      { id: "d", inputLength: 2000, hashIds: [1, 2, 3, 9] },
      // shares [1, 2, 4] with b (1400 tokens), and nothing earlier goes further
      { id: "e", inputLength: 1600, hashIds: [1, 2, 4, 5] },
      // a new first block: nothing
      { id: "f", inputLength: 900, hashIds: [7, 2] },
      { id: "g", inputLength: 100 },
    ];
    const got = bestCachedTokens(rows, 512, 16);
    expect(Object.fromEntries(got)).toEqual({
      a: 0,
      b: 1024,
      c: 288,
      d: 1488,
      e: 1392,
      f: 0,
      g: 0,
    });
  });
});
