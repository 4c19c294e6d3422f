/**
 * Deterministic randomness. `Math.random` is banned in shared/ (scripts/check-shared.mjs).
 *
 * - `mulberry32(seed)`: a small seeded stream generator, used for synthetic weights and tests.
 * - `hashUniform(seed, a, b)`: a stateless uniform draw in [0, 1) from a key. Sampling uses it with
 *   (seed, choice index, position) so that a sequence resumed on another instance draws the same
 *   number at the same position, whatever ran before on either side.
 */

/** mulberry32 (Tommy Ettinger): 32-bit state, period 2^32, good enough for weights and tests. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal draws from a uniform stream (Box-Muller). */
export function gaussian(rng: () => number): () => number {
  return () => {
    const u = Math.max(rng(), 1e-12);
    const v = rng();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
}

/** splitmix32-style finaliser: a bijective avalanche mix of a 32-bit word. */
function mix32(x: number): number {
  let z = x >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/**
 * Stateless uniform in [0, 1) from (seed, a, b). Seeds may be any safe integer: the high and low
 * 32-bit halves are both mixed in.
 */
export function hashUniform(seed: number, a: number, b: number): number {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  let h = mix32(lo ^ 0x9e3779b9);
  h = mix32(h ^ hi);
  h = mix32(h ^ (a >>> 0));
  h = mix32(h ^ Math.imul(b >>> 0, 0x27d4eb2f));
  return h / 4294967296;
}
