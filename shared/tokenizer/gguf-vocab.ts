/**
 * Reads a tokenizer vocabulary from GGUF metadata (the `tokenizer.ggml.*` keys), with llama.cpp's
 * per-model defaults left to the Tokenizer constructor. Pure.
 */
import type { GgufValue } from "../gguf/gguf.ts";
import type { TokenizerModelName } from "./text-model.ts";

/** A vocabulary in plain form (what `vocabFromGguf` reads), also handy for synthetic tests. */
export interface TokenizerVocab {
  /** `tokenizer.ggml.model`: "llama" (SentencePiece, the default) or "gpt2" (byte-level BPE). */
  model?: TokenizerModelName;
  tokens: string[];
  /** SPM: merge priority per token (higher merges first); default 0. */
  scores?: number[];
  /** BPE: `tokenizer.ggml.merges`, "left right" in rank order (required for "gpt2"). */
  merges?: string[];
  /** BPE: `tokenizer.ggml.pre`, the pre-tokenizer; default "default". */
  pre?: string;
  /** GGUF token types (see TokenType); default NORMAL. */
  tokenTypes?: number[];
  /**
   * Special ids; undefined means llama.cpp's default for the model (SPM: BOS 1, EOS 2, UNK 0;
   * BPE: BOS 11, EOS 11, no UNK), null means none.
   */
  bosId?: number | null;
  eosId?: number | null;
  unkId?: number | null;
  /**
   * Defaults: SPM addBos true, addSpacePrefix true; BPE addSpacePrefix false and addBos false
   * (true for the Llama 3 pre-tokenizers); addEos false.
   */
  addBos?: boolean;
  addEos?: boolean;
  addSpacePrefix?: boolean;
}

const MODELS: readonly string[] = ["llama", "gpt2"] satisfies TokenizerModelName[];

function metaNumber(metadata: Map<string, GgufValue>, key: string): number | undefined {
  const v = metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  throw new Error(`GGUF ${key}: expected an integer, got ${typeof v}`);
}

function metaBool(metadata: Map<string, GgufValue>, key: string): boolean | undefined {
  const v = metadata.get(key);
  if (v === undefined) return undefined;
  if (typeof v === "boolean") return v;
  throw new Error(`GGUF ${key}: expected a bool, got ${typeof v}`);
}

function metaNumberArray(metadata: Map<string, GgufValue>, key: string): number[] | undefined {
  const v = metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new Error(`GGUF ${key}: expected an array`);
  return v.map((x, i) => {
    if (typeof x === "number") return x;
    if (typeof x === "bigint") return Number(x);
    throw new Error(`GGUF ${key}[${i}]: expected a number`);
  });
}

function metaStringArray(metadata: Map<string, GgufValue>, key: string): string[] | undefined {
  const v = metadata.get(key);
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((t) => typeof t !== "string")) {
    throw new Error(`GGUF ${key}: expected an array of strings`);
  }
  return v as string[];
}

/** The vocabulary of a GGUF's metadata (`parseGguf(bytes).metadata`). */
export function vocabFromGguf(metadata: Map<string, GgufValue>): TokenizerVocab {
  const model = metadata.get("tokenizer.ggml.model");
  if (model === undefined) throw new Error("GGUF has no tokenizer.ggml.model");
  if (typeof model !== "string" || !MODELS.includes(model)) {
    throw new Error(
      `unsupported tokenizer model ${JSON.stringify(model)}: implemented are "llama" ` +
        `(SentencePiece) and "gpt2" (byte-level BPE)`,
    );
  }
  const tokens = metaStringArray(metadata, "tokenizer.ggml.tokens");
  if (!tokens) throw new Error("GGUF has no tokenizer.ggml.tokens");
  const pre = metadata.get("tokenizer.ggml.pre");
  if (pre !== undefined && typeof pre !== "string") {
    throw new Error("GGUF tokenizer.ggml.pre: expected a string");
  }
  const n = tokens.length;
  // llama.cpp ignores an id outside the vocab (e.g. 0xFFFFFFFF) and keeps the default.
  const id = (key: string): number | undefined => {
    const v = metaNumber(metadata, `tokenizer.ggml.${key}`);
    return v !== undefined && v >= 0 && v < n ? v : undefined;
  };
  return {
    model: model as TokenizerModelName,
    tokens,
    scores: metaNumberArray(metadata, "tokenizer.ggml.scores"),
    merges: metaStringArray(metadata, "tokenizer.ggml.merges"),
    pre,
    tokenTypes: metaNumberArray(metadata, "tokenizer.ggml.token_type"),
    bosId: id("bos_token_id"),
    eosId: id("eos_token_id"),
    unkId: id("unknown_token_id"),
    addBos: metaBool(metadata, "tokenizer.ggml.add_bos_token"),
    addEos: metaBool(metadata, "tokenizer.ggml.add_eos_token"),
    addSpacePrefix: metaBool(metadata, "tokenizer.ggml.add_space_prefix"),
  };
}
