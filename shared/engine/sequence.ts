/**
 * Sequence state: one token stream (prompt plus generated tokens), the scheduler's unit.
 * Plain data so it can be serialised into a DO's storage and restored. Pure.
 */
import type { SamplerParams } from "../model/sampler.ts";
import type { BlockTable } from "./kv-block-manager.ts";
import type { KvState } from "./kv-policy/state.ts";

export type SeqId = string;
export type SequenceStatus = "waiting" | "running" | "preempted" | "finished";
export type FinishReason = "stop" | "length" | "abort";

export interface SamplingParams extends SamplerParams {
  /** Most tokens to generate. */
  maxTokens: number;
  /** Generation ends just before the first occurrence of any of these strings. */
  stop: string[];
  /** Keep generating past EOS (benchmarks). */
  ignoreEos: boolean;
}

export interface Sequence {
  seqId: SeqId;
  /** Which of a request's `n` choices this is (part of the sampling key). */
  choiceIndex: number;
  /** Prompt ids followed by generated ids. */
  tokenIds: number[];
  numPromptTokens: number;
  /** Tokens whose K/V are in the cache. */
  numComputedTokens: number;
  /** Prompt tokens whose K/V came from the prefix cache at admission (usage.cached_tokens). */
  numCachedTokens: number;
  blockTable: BlockTable;
  status: SequenceStatus;
  params: SamplingParams;
  /**
   * Keep the KV blocks when the sequence finishes (a prefill task hands them to a decode
   * instance); the host releases them with Scheduler.releaseHeld().
   */
  holdKv: boolean;
  /**
   * The root of this sequence's KV block keys: only sequences with the same salt share prefix
   * blocks ("": the unsalted cache). The serving layer derives it per tenant (`cacheSaltFor`).
   */
  cacheSalt: string;
  /**
   * Output tokens the scheduler expects this sequence to generate (the JobExecutor's prediction),
   * when that is fewer than maxTokens; only load reports use it.
   */
  expectedOutputTokens: number | null;
  /** Sparse KV-cache policy state (kv-policy/state.ts); null: dense. */
  kv: KvState | null;
  finishReason: FinishReason | null;
}

export function newSequence(
  seqId: SeqId,
  promptIds: readonly number[],
  params: SamplingParams,
  choiceIndex = 0,
  cacheSalt = "",
): Sequence {
  return {
    seqId,
    choiceIndex,
    tokenIds: [...promptIds],
    numPromptTokens: promptIds.length,
    numComputedTokens: 0,
    numCachedTokens: 0,
    blockTable: [],
    status: "waiting",
    params,
    holdKv: false,
    cacheSalt,
    expectedOutputTokens: null,
    kv: null,
    finishReason: null,
  };
}

export function numOutputTokens(s: Sequence): number {
  return s.tokenIds.length - s.numPromptTokens;
}

/**
 * The work still owed for `seqs`, in tokens (DeepFlow's load): per sequence, prompt tokens not yet
 * computed plus decode tokens still to generate, up to its expected output length when one is
 * known (else max tokens), and at most `decodeCap`.
 */
export function outstandingTokens(
  seqs: readonly Pick<
    Sequence,
    "tokenIds" | "numPromptTokens" | "numComputedTokens" | "params" | "expectedOutputTokens"
  >[],
  decodeCap = Number.POSITIVE_INFINITY,
): number {
  let total = 0;
  for (const s of seqs) {
    const prefill = Math.max(0, s.numPromptTokens - s.numComputedTokens);
    const limit = Math.min(s.params.maxTokens, s.expectedOutputTokens ?? Number.POSITIVE_INFINITY);
    const decode = Math.max(0, limit - (s.tokenIds.length - s.numPromptTokens));
    total += prefill + Math.min(decode, decodeCap);
  }
  return total;
}

export const GREEDY: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  seed: 0,
  numTopLogprobs: 0,
  maxTokens: 16,
  stop: [],
  ignoreEos: false,
  logprobs: false,
};
