/**
 * From an API-level GenerateTask to engine sequences and back to GenerateEvents: prompt
 * preparation (BOS rule, token rules, context checks) and per-task output bookkeeping (choices,
 * usage). Pure; the Npu DO drives it.
 *
 * Token rules (also in the README):
 * - the prompt carries exactly one BOS when the model adds one: a template that renders the BOS
 *   text itself has it removed before tokenising;
 * - default max tokens: 16 for completions, the rest of the context for chat;
 * - prompt + max tokens above the context is `context_length_exceeded`;
 * - EOS never appears in text and counts as a completion token when it ended generation.
 */

import type { SeqOutput } from "../engine/engine.ts";
import type { KvUsage } from "../engine/kv-policy/sequence-kv.ts";
import type { SamplingParams } from "../engine/sequence.ts";
import { errorInfo, failure, type Result } from "../errors.ts";
import type { SampledToken } from "../model/sampler.ts";
import type {
  ChatMessage,
  ContinuedChoice,
  GenerateEvent,
  GenerateInput,
  GenerateTask,
  TokenLogprobEntry,
} from "../protocol/messages.ts";
import type { Tokenizer } from "../tokenizer/tokenizer.ts";

export const DEFAULT_COMPLETION_MAX_TOKENS = 16;

export interface PreparedSeq {
  /** Choice index in the response (prompt-major). */
  index: number;
  promptIds: number[];
  /** Its sampling parameters (a continued choice has the rest of its max tokens). */
  params: SamplingParams;
  /** Drop the leading space of its first piece (a chat answer with nothing out yet). */
  stripLeadingSpace: boolean;
}

export interface PreparedTask {
  seqs: PreparedSeq[];
  /** Sum over prompts (each prompt once, whatever n is), as OpenAI's usage counts it. */
  numPromptTokens: number;
}

/** A job's prompts tokenised once, by the JobExecutor, with its limits resolved. */
export interface PreparedPrompts {
  prompts: number[][];
  maxTokens: number;
  stripLeadingSpace: boolean;
  numPromptTokens: number;
}

function contextError(maxModelLen: number, numPrompt: number, maxTokens: number, chat: boolean) {
  const where = chat ? "messages" : "prompt";
  return errorInfo(
    "invalid_request",
    `This model's maximum context length is ${maxModelLen} tokens. However, you requested ` +
      `${numPrompt + maxTokens} tokens (${numPrompt} in the ${where}, ${maxTokens} in the ` +
      `completion). Please reduce the length of the ${where} or completion.`,
    chat ? "messages" : "prompt",
    "context_length_exceeded",
  );
}

/**
 * The token ids of each prompt, as the engine runs them: chat messages rendered through the
 * template (a rendered BOS text dropped, since the tokenizer adds the one BOS), text prompts
 * encoded, token-id prompts checked against the vocabulary and used as given.
 */
function tokenizePrompts(
  input: GenerateInput,
  tokenizer: Tokenizer,
  renderChat: (messages: readonly ChatMessage[]) => string,
): Result<number[][]> {
  if (input.kind === "chat") {
    let text: string;
    try {
      text = renderChat(input.messages);
    } catch (e) {
      return failure(
        errorInfo("invalid_request", `chat template failed: ${(e as Error).message}`, "messages"),
      );
    }
    const bosText = tokenizer.bosId === null ? null : tokenizer.tokenPiece(tokenizer.bosId);
    if (tokenizer.addBos && bosText && text.startsWith(bosText)) text = text.slice(bosText.length);
    return { ok: true, value: [tokenizer.encode(text, { parseSpecial: true })] };
  }
  const prompts: number[][] = [];
  for (const p of input.prompts) {
    if (typeof p === "string") {
      prompts.push(tokenizer.encode(p));
      continue;
    }
    const bad = p.find((id) => !Number.isInteger(id) || id < 0 || id >= tokenizer.vocabSize);
    if (bad !== undefined) {
      return failure(
        errorInfo(
          "invalid_request",
          `token id ${bad} is outside the vocabulary (0..${tokenizer.vocabSize - 1})`,
          "prompt",
        ),
      );
    }
    if (p.length === 0) return failure(errorInfo("invalid_request", "prompt is empty", "prompt"));
    prompts.push([...p]);
  }
  return { ok: true, value: prompts };
}

/**
 * Tokenises a job's prompts and resolves max tokens (the JobExecutor does this once per job).
 * Errors are values (400s for the client). `renderChat` is the model's chat template. A
 * continuation's prompts (`continues`) are checked with each choice's rest of max tokens.
 */
export function preparePrompts(
  input: GenerateInput,
  requestedMaxTokens: number | null,
  tokenizer: Tokenizer,
  maxModelLen: number,
  renderChat: (messages: readonly ChatMessage[]) => string,
  continues: readonly ContinuedChoice[] | null = null,
): Result<PreparedPrompts> {
  const chat = input.kind === "chat";
  const tokenized = tokenizePrompts(input, tokenizer, renderChat);
  if (!tokenized.ok) return tokenized;
  const prompts = tokenized.value;
  let maxTokens = requestedMaxTokens ?? (chat ? 0 : DEFAULT_COMPLETION_MAX_TOKENS);
  for (const [p, ids] of prompts.entries()) {
    if (ids.length === 0) return failure(errorInfo("invalid_request", "prompt is empty", "prompt"));
    // a continued choice: its prompt ends with its delivered tokens, which its budget deducts
    const numDelivered = continues?.[p]?.numDelivered ?? 0;
    const budget =
      (requestedMaxTokens ?? (chat ? maxModelLen - ids.length : maxTokens)) - numDelivered;
    if (budget < 1 || ids.length + budget > maxModelLen) {
      return failure(contextError(maxModelLen, ids.length, Math.max(budget, 1), chat));
    }
    if (chat && requestedMaxTokens === null) maxTokens = budget;
  }
  return {
    ok: true,
    value: {
      prompts,
      maxTokens,
      stripLeadingSpace: chat,
      numPromptTokens: prompts.reduce((a, ids) => a + ids.length, 0),
    },
  };
}

/**
 * A task's engine sequences (prompt-major choices) and sampling parameters. No tokenizer. A
 * continuation (`task.continues`, request migration) runs prompt p as the choice it continues,
 * with that choice's rest of max tokens.
 */
export function sequencesFor(task: GenerateTask): PreparedTask {
  const s = task.sampling;
  const params: SamplingParams = {
    temperature: s.temperature,
    topP: s.topP,
    topK: s.topK,
    seed: s.seed,
    numTopLogprobs: s.logprobs ? s.topLogprobs : 0,
    maxTokens: task.maxTokens,
    stop: s.stop,
    ignoreEos: s.ignoreEos,
    logprobs: s.logprobs,
  };
  const strip = task.stripLeadingSpace;
  const seqs: PreparedSeq[] = [];
  task.prompts.forEach((ids, p) => {
    const c = task.continues?.[p];
    if (c) {
      seqs.push({
        index: c.index,
        promptIds: ids,
        params: { ...params, maxTokens: task.maxTokens - c.numDelivered },
        stripLeadingSpace: strip && c.numDelivered === 0,
      });
      return;
    }
    for (let i = 0; i < task.n; i++) {
      seqs.push({ index: p * task.n + i, promptIds: ids, params, stripLeadingSpace: strip });
    }
  });
  return { seqs, numPromptTokens: task.prompts.reduce((a, ids) => a + ids.length, 0) };
}

/** Converts a sampled token to the API's logprob entry. */
export function logprobEntry(tokenizer: Tokenizer, t: SampledToken): TokenLogprobEntry {
  return {
    token: tokenizer.tokenText(t.tokenId),
    logprob: t.logprob,
    bytes: tokenizer.tokenBytes(t.tokenId),
    topLogprobs: t.topLogprobs.map((a) => ({
      token: tokenizer.tokenText(a.tokenId),
      logprob: a.logprob,
      bytes: tokenizer.tokenBytes(a.tokenId),
    })),
  };
}

/** Two choices' KV reports as one: counts summed, the peak the largest. */
function mergeKvUsage(a: KvUsage | null, b: KvUsage): KvUsage {
  if (!a) return { ...b };
  return {
    ...a,
    resident_pages: a.resident_pages + b.resident_pages,
    evictions: a.evictions + b.evictions,
    peak_kv_bytes: Math.max(a.peak_kv_bytes, b.peak_kv_bytes),
  };
}

/** Per-task output bookkeeping: turns engine outputs into events and knows when the task is done. */
export class TaskTracker {
  private numFinished = 0;
  private numCompletionTokens = 0;
  /** Cached prompt tokens per prompt (the most any of its choices got). */
  private readonly cachedByPrompt = new Map<number, number>();
  /** The KV-cache policy's report, merged over choices. */
  private kvCache: KvUsage | null = null;
  firstTokenAt: number | null = null;

  constructor(
    readonly numChoices: number,
    readonly numPromptTokens: number,
    private readonly tokenizer: Tokenizer,
    /** Choices per prompt (`n`). */
    private readonly choicesPerPrompt = 1,
  ) {}

  get cachedTokens(): number {
    let sum = 0;
    for (const v of this.cachedByPrompt.values()) sum += v;
    return sum;
  }

  get done(): boolean {
    return this.numFinished === this.numChoices;
  }

  get completionTokens(): number {
    return this.numCompletionTokens;
  }

  /** Events for one engine output of choice `index`. */
  onOutput(index: number, o: SeqOutput, now: number): GenerateEvent[] {
    this.firstTokenAt ??= now;
    this.numCompletionTokens += o.newTokenIds.length;
    const p = Math.floor(index / this.choicesPerPrompt);
    this.cachedByPrompt.set(p, Math.max(this.cachedByPrompt.get(p) ?? 0, o.numCachedTokens));
    const events: GenerateEvent[] = [];
    if (o.text.length > 0 || o.logprobs.length > 0) {
      events.push({
        type: "delta",
        index,
        text: o.text,
        // the tokens whose text this delta completes: a continuation resumes after them
        tokenIds: o.tokenIds,
        logprobs:
          o.logprobs.length > 0 ? o.logprobs.map((t) => logprobEntry(this.tokenizer, t)) : null,
      });
    }
    if (o.finished && o.finishReason !== "abort") {
      this.numFinished++;
      if (o.kvCache) this.kvCache = mergeKvUsage(this.kvCache, o.kvCache);
      events.push({
        type: "finish",
        index,
        finishReason: o.finishReason === "length" ? "length" : "stop",
        numOutputTokens: o.numOutputTokens,
      });
      if (this.done) {
        events.push({
          type: "usage",
          promptTokens: this.numPromptTokens,
          completionTokens: this.numCompletionTokens,
          totalTokens: this.numPromptTokens + this.numCompletionTokens,
          cachedTokens: this.cachedTokens,
          ...(this.kvCache ? { kvCache: this.kvCache } : {}),
        });
      }
    }
    return events;
  }
}
