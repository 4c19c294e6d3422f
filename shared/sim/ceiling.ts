/**
 * What no placement can beat, for reading a simulation's goodput (bench's sim:breakdown): a
 * request's TTFT alone on an idle instance (its prompt computed in the card's chunks from its
 * cached prefix on, as the Scheduler runs it: nothing is faster, since sharing a step only adds
 * time), and the longest prefix a Mooncake-style row shares with any earlier row (what one
 * unbounded cache shared by every instance could serve it: more than any instance holds). Pure.
 */
import { attendedPairs } from "../engine/executor.ts";
import { admissionMs, type ModelCard, servedStepMs } from "./cost-model.ts";

/**
 * ms from arrival to the first token of a prompt of `numPromptTokens` alone on an idle instance
 * of `card`, `numCachedTokens` of it served from the prefix cache: the request path's admission,
 * then `maxNumBatchedTokens`-token chunks (the last one samples the first token).
 */
export function soloTtftMs(card: ModelCard, numPromptTokens: number, numCachedTokens = 0): number {
  let ms = admissionMs(card, numPromptTokens);
  const from = Math.min(Math.max(0, numCachedTokens), numPromptTokens - 1);
  for (let p = from; p < numPromptTokens; p += card.maxNumBatchedTokens) {
    const k = Math.min(card.maxNumBatchedTokens, numPromptTokens - p);
    ms += servedStepMs(card, {
      scheduledTokens: k,
      attendedTokens: k > 1 ? attendedPairs(p, k) : 0,
      decodeAttended: k === 1 ? attendedPairs(p, 1) : 0,
      numSeqs: 1,
      numSampled: p + k === numPromptTokens ? 1 : 0,
    });
  }
  return ms;
}

export interface HashedRow {
  id: string;
  inputLength: number;
  /** One id per `hashBlockTokens` tokens of the prompt; equal ids mean equal blocks. */
  hashIds?: readonly number[];
}

/**
 * Per row id, in row order: the prompt tokens a cache holding every earlier row could serve,
 * whole KV blocks of `kvBlockSize`, the last prompt token always computed. A row shares j hash
 * blocks with an earlier one when their first j ids are equal, and then at most the earlier
 * row's own length (its last block may be partial).
 */
export function bestCachedTokens(
  rows: readonly HashedRow[],
  hashBlockTokens: number,
  kvBlockSize: number,
): Map<string, number> {
  interface Node {
    next: Map<number, Node>;
    /** Longest earlier prompt through this node, in tokens. */
    maxLen: number;
  }
  const root: Node = { next: new Map(), maxLen: 0 };
  const out = new Map<string, number>();
  for (const r of rows) {
    const ids = r.hashIds ?? [];
    let node = root;
    let shared = 0;
    for (let j = 0; j < ids.length; j++) {
      const child = node.next.get(ids[j] as number);
      if (!child) break;
      shared = Math.min((j + 1) * hashBlockTokens, child.maxLen, r.inputLength);
      node = child;
    }
    const usable = Math.max(0, Math.min(shared, r.inputLength - 1));
    out.set(r.id, Math.floor(usable / kvBlockSize) * kvBlockSize);
    node = root;
    for (const h of ids) {
      let child = node.next.get(h);
      if (!child) {
        child = { next: new Map(), maxLen: 0 };
        node.next.set(h, child);
      }
      child.maxLen = Math.max(child.maxLen, r.inputLength);
      node = child;
    }
  }
  return out;
}
