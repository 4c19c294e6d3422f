/**
 * Token sampling from logits: greedy, temperature, top-k, top-p, and per-token logprobs.
 *
 * Randomness is stateless: the uniform draw for a token is hashUniform(seed, choiceIndex,
 * position), so the same (seed, choice, position) samples the same token wherever the sequence
 * runs, and `n` choices of one request differ by their choice index. Pure.
 */
import { hashUniform } from "../random.ts";

export interface SamplerParams {
  /** 0 means greedy. */
  temperature: number;
  /** 1 disables nucleus filtering. */
  topP: number;
  /** 0 disables top-k filtering. */
  topK: number;
  seed: number;
  /** Report the chosen token's logprob (else it is left NaN, saving a pass over the vocab). */
  logprobs: boolean;
  /** How many alternatives to report per token (0: only the chosen token's logprob). */
  numTopLogprobs: number;
}

export interface TokenLogprob {
  tokenId: number;
  logprob: number;
}

export interface SampledToken {
  tokenId: number;
  /** log-softmax of the raw logits (temperature 1) at the chosen token; NaN unless asked for. */
  logprob: number;
  topLogprobs: TokenLogprob[];
}

/** Index of the largest value; ties go to the lower index (as llama.cpp's greedy sampler). */
export function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  let bestV = x[off] as number;
  for (let i = 1; i < n; i++) {
    const v = x[off + i] as number;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

/** log(sum(exp(x))) over the row, float64. */
function logSumExp(x: Float32Array, off: number, n: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) max = Math.max(max, x[off + i] as number);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp((x[off + i] as number) - max);
  return max + Math.log(sum);
}

/** Ids sorted by descending logit (ties: lower id first), truncated to `k` (0: all). */
function sortedIds(x: Float32Array, off: number, n: number, k: number): number[] {
  const ids = Array.from({ length: n }, (_, i) => i);
  ids.sort((a, b) => (x[off + b] as number) - (x[off + a] as number) || a - b);
  return k > 0 && k < n ? ids.slice(0, k) : ids;
}

/**
 * Samples one token from logits row x[off, off + vocabSize).
 * @param choiceIndex which of the request's `n` choices this sequence is
 * @param position the position the sampled token will take in the sequence
 */
export function sampleToken(
  x: Float32Array,
  off: number,
  vocabSize: number,
  p: SamplerParams,
  choiceIndex: number,
  position: number,
): SampledToken {
  let tokenId: number;
  if (p.temperature <= 0) {
    tokenId = argmax(x, off, vocabSize);
  } else {
    const ids = sortedIds(x, off, vocabSize, p.topK);
    const maxLogit = x[off + (ids[0] as number)] as number;
    const probs = ids.map((id) => Math.exp(((x[off + id] as number) - maxLogit) / p.temperature));
    let total = probs.reduce((a, b) => a + b, 0);
    let keep = probs.length;
    if (p.topP < 1) {
      // smallest prefix whose mass reaches topP (always at least one token)
      let cum = 0;
      for (let i = 0; i < probs.length; i++) {
        cum += probs[i] as number;
        if (cum >= p.topP * total) {
          keep = i + 1;
          break;
        }
      }
      total = probs.slice(0, keep).reduce((a, b) => a + b, 0);
    }
    const u = hashUniform(p.seed, choiceIndex, position) * total;
    let cum = 0;
    tokenId = ids[keep - 1] as number;
    for (let i = 0; i < keep; i++) {
      cum += probs[i] as number;
      if (u < cum) {
        tokenId = ids[i] as number;
        break;
      }
    }
  }
  if (!p.logprobs) return { tokenId, logprob: Number.NaN, topLogprobs: [] };
  const lse = logSumExp(x, off, vocabSize);
  const topLogprobs =
    p.numTopLogprobs > 0
      ? sortedIds(x, off, vocabSize, p.numTopLogprobs).map((id) => ({
          tokenId: id,
          logprob: (x[off + id] as number) - lse,
        }))
      : [];
  return { tokenId, logprob: (x[off + tokenId] as number) - lse, topLogprobs };
}
