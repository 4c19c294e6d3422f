/**
 * The merge loop SentencePiece (llm_tokenizer_spm_session) and byte-level BPE
 * (llm_tokenizer_bpe_session) share: start from the code points of a word, repeatedly merge the
 * adjacent pair with the highest priority (ties: the leftmost) through a priority queue, and hand
 * the final symbols out in order. Pure.
 */
import { BigramQueue } from "./bigram-queue.ts";

/**
 * The priority of merging the symbol at `start` (`leftLen` UTF-16 units) with the one right
 * after it (`rightLen` units), or undefined when the pair does not merge.
 */
export type PairPriority = (start: number, leftLen: number, rightLen: number) => number | undefined;

// One queue reused by every call: the loop is synchronous, so calls never interleave.
const queue = new BigramQueue();

/**
 * Merges the code points of `text` by `priority` and calls `emit(start, length)` (UTF-16 offset
 * and length) for each final symbol, left to right. Symbols are addressed by UTF-16 offset and
 * length; a change in a pair's total length detects a stale queue entry, as llama.cpp's text
 * comparison does (a symbol only grows by absorbing its right neighbour).
 */
export function mergeSymbols(
  text: string,
  priority: PairPriority,
  emit: (start: number, length: number) => void,
): void {
  const units = text.length;
  if (units === 0) return;
  const start = new Int32Array(units);
  const len = new Int32Array(units);
  let count = 0;
  for (let i = 0; i < units; count++) {
    const c = text.charCodeAt(i);
    const l = c >= 0xd800 && c <= 0xdbff && i + 1 < units ? 2 : 1;
    start[count] = i;
    len[count] = l;
    i += l;
  }
  const prev = new Int32Array(count);
  const next = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    prev[i] = i - 1;
    next[i] = i + 1 < count ? i + 1 : -1;
  }

  queue.clear();
  const tryAdd = (left: number, right: number): void => {
    if (left < 0 || right < 0) return;
    const ln = len[left] as number;
    const rn = len[right] as number;
    const p = priority(start[left] as number, ln, rn);
    if (p !== undefined) queue.push(p, left, right, ln + rn);
  };
  for (let i = 1; i < count; i++) tryAdd(i - 1, i);

  while (queue.length > 0) {
    queue.pop();
    const left = queue.topLeft;
    const right = queue.topRight;
    const ln = len[left] as number;
    const rn = len[right] as number;
    if (ln === 0 || rn === 0 || ln + rn !== queue.topSize) continue; // stale
    len[left] = ln + rn;
    len[right] = 0;
    const after = next[right] as number;
    next[left] = after;
    if (after >= 0) prev[after] = left;
    tryAdd(prev[left] as number, left);
    tryAdd(left, after);
  }

  for (let i = 0; i !== -1; i = next[i] as number) emit(start[i] as number, len[i] as number);
}
