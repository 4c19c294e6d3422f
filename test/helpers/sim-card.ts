import type { ModelCard } from "../../shared/sim/cost-model.ts";

/**
 * A hand-written model card for the simulator's tests: step time a + b*tokens + c*attended pairs
 * + d*sequences ms, with room for `maxNumSeqs` sequences at once.
 */
export function testCard(maxNumSeqs: number): ModelCard {
  return {
    name: "test",
    source: "hand-written for tests",
    a: 1,
    b: 0.01,
    c: 0.001,
    d: 0.5,
    maxModelLen: 4096,
    kvCapacityTokens: 8192,
    blockSize: 16,
    maxNumSeqs,
    maxNumBatchedTokens: 512,
  };
}
