/**
 * The llama (SentencePiece BPE, llama.cpp "SPM") tokenizer, built from GGUF metadata. Pure: no
 * host APIs beyond TextEncoder/TextDecoder.
 *
 * This module owns text <-> token id conversion exactly as llama.cpp does it (llama-vocab.cpp:
 * `llm_tokenizer_spm_session`, `tokenizer_st_partition`, `token_to_piece`, `detokenize`):
 *
 * Encoding. The text is split into fragments at special-token texts (user-defined tokens always;
 * control and unknown tokens, e.g. "<s>", only with `parseSpecial`), longest token text first.
 * Each text fragment gets a leading " " when `addSpacePrefix` and it is the first fragment or
 * follows a special token (llama.cpp's `is_prev_special`), has every " " replaced by U+2581 "▁",
 * and is split into characters. The adjacent pair whose concatenation is a vocab token with the
 * highest score is merged (ties: the leftmost), repeatedly, through a priority queue. Each final
 * symbol is emitted as its token, or when it is not in the vocab as one `<0xXX>` byte token per
 * UTF-8 byte (then the single-character token, then UNK; llama.cpp would throw there).
 *
 * Decoding (llama_detokenize with remove_special = false). Each id renders as its piece bytes:
 * normal tokens with "▁" -> " "; byte tokens as their raw byte; user-defined tokens verbatim;
 * control and unknown tokens as nothing (their text with `special`); unused/undefined as nothing.
 * Leading-space rule: when the vocab adds a space prefix, ONE leading " " is removed from the
 * piece of `ids[0]` only, whatever that token is. A BOS (or any control token) at ids[0] renders
 * nothing and so consumes the strip: decode([BOS, "▁Once"]) is " Once" while decode(["▁Once"])
 * is "Once". Hence decode(encode(x).slice(1)) === x for text without "▁" or lone surrogates.
 * The bytes are decoded as UTF-8 with U+FFFD for invalid sequences (TextDecoder, non-fatal).
 * Pass `stripLeadingSpace: false` to render a continuation (generated tokens after a prompt),
 * which is what llama.cpp's server streams (token_to_piece with lstrip = 0).
 */

import type { GgufValue } from "./gguf.ts";

/** GGUF `tokenizer.ggml.token_type` values (llama_token_type). */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

// llama_token_attr bits (the effective attributes llama.cpp derives from the token types).
const ATTR_UNKNOWN = 1 << 0;
const ATTR_UNUSED = 1 << 1;
const ATTR_NORMAL = 1 << 2;
const ATTR_CONTROL = 1 << 3;
const ATTR_USER_DEFINED = 1 << 4;
const ATTR_BYTE = 1 << 5;

const TYPE_TO_ATTR: Record<number, number> = {
  [TokenType.NORMAL]: ATTR_NORMAL,
  [TokenType.UNKNOWN]: ATTR_UNKNOWN,
  [TokenType.CONTROL]: ATTR_CONTROL,
  [TokenType.USER_DEFINED]: ATTR_USER_DEFINED,
  [TokenType.UNUSED]: ATTR_UNUSED,
  [TokenType.BYTE]: ATTR_BYTE,
};

/**
 * Token texts llama.cpp treats as end-of-generation, forcing them to control type when a GGUF
 * marks them otherwise (llama-vocab.cpp "control-looking token"; model-specific exceptions for
 * gpt-oss, solar-open, gemma4 and paddleocr are not reproduced).
 */
const EOG_TEXTS = new Set([
  "<|eot_id|>",
  "<|im_end|>",
  "<|end|>",
  "<|return|>",
  "<|call|>",
  "<|flush|>",
  "<|calls|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "</s>",
  "<|eom_id|>",
  "<EOT>",
  "_<EOT>",
  "[EOT]",
  "[EOS]",
  "<|end_of_text|>",
  "<end_of_utterance>",
  "<eos>",
  "<turn|>",
  "<|tool_response>",
  "<｜end▁of▁sentence｜>",
  "[e~[",
]);

const SPACE_ESCAPE = "\u2581"; // "▁"
const EMPTY = new Uint8Array(0);
const HEX = "0123456789ABCDEF";

/** A vocabulary in plain form (what `fromGguf` reads), also handy for synthetic tests. */
export interface TokenizerVocab {
  tokens: string[];
  /** Merge priority per token (higher merges first); default 0. */
  scores?: number[];
  /** GGUF token types (see TokenType); default NORMAL. */
  tokenTypes?: number[];
  /** Special ids; undefined means the llama default (BOS 1, EOS 2, UNK 0), null means none. */
  bosId?: number | null;
  eosId?: number | null;
  unkId?: number | null;
  /** Defaults: addBos true, addEos false, addSpacePrefix true (llama.cpp's SPM defaults). */
  addBos?: boolean;
  addEos?: boolean;
  addSpacePrefix?: boolean;
}

export interface EncodeOptions {
  /** Prepend BOS. Default: the vocab's add_bos_token. */
  addBos?: boolean;
  /** Append EOS. Default: the vocab's add_eos_token. */
  addEos?: boolean;
  /**
   * Emit control/unknown token texts found in the text ("<s>", "<|im_start|>") as their ids.
   * Default false (user text). User-defined tokens are matched either way, as in llama.cpp.
   */
  parseSpecial?: boolean;
}

export interface DecodeOptions {
  /** Render control and unknown tokens as their text ("<s>"). Default false. */
  special?: boolean;
  /**
   * Remove one leading space from the piece of the first id. Default: the vocab's
   * add_space_prefix (llama_detokenize). Use false for a continuation of earlier text.
   */
  stripLeadingSpace?: boolean;
}

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

/** Replaces lone surrogates by U+FFFD, as UTF-8 encoding does (llama.cpp sees UTF-8 bytes). */
function wellFormed(text: string): string {
  if (!/[\uD800-\uDFFF]/.test(text)) return text;
  return new TextDecoder().decode(new TextEncoder().encode(text));
}

/**
 * Max-priority queue of candidate merges: highest score first, ties to the smallest left index
 * (llm_bigram_spm::comparator). Parallel arrays, no per-entry objects.
 */
class BigramQueue {
  private score: number[] = [];
  private left: number[] = [];
  private right: number[] = [];
  private size: number[] = [];
  length = 0;
  /** The entry popped last. */
  topLeft = 0;
  topRight = 0;
  topSize = 0;

  private before(i: number, j: number): boolean {
    const si = this.score[i] as number;
    const sj = this.score[j] as number;
    return si > sj || (si === sj && (this.left[i] as number) < (this.left[j] as number));
  }

  private swap(i: number, j: number): void {
    for (const a of [this.score, this.left, this.right, this.size]) {
      const t = a[i] as number;
      a[i] = a[j] as number;
      a[j] = t;
    }
  }

  push(score: number, left: number, right: number, size: number): void {
    let i = this.length++;
    this.score[i] = score;
    this.left[i] = left;
    this.right[i] = right;
    this.size[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the best entry into topLeft/topRight/topSize. Call only when length > 0. */
  pop(): void {
    this.topLeft = this.left[0] as number;
    this.topRight = this.right[0] as number;
    this.topSize = this.size[0] as number;
    const last = --this.length;
    if (last > 0) {
      this.score[0] = this.score[last] as number;
      this.left[0] = this.left[last] as number;
      this.right[0] = this.right[last] as number;
      this.size[0] = this.size[last] as number;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < last && this.before(l, best)) best = l;
        if (r < last && this.before(r, best)) best = r;
        if (best === i) break;
        this.swap(i, best);
        i = best;
      }
    }
  }
}

export class Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;

  private readonly pieces: string[];
  private readonly scores: Float64Array;
  private readonly types: Uint8Array;
  private readonly attrs: Uint8Array;
  private readonly textToId = new Map<string, number>();
  /** Token id for each byte value (byte_to_token), -1 when none. */
  private readonly byteIds = new Int32Array(256);
  /** Special tokens for partitioning, longest text first. */
  private readonly specials: number[] = [];
  private readonly eog = new Set<number>();
  /** Piece bytes as token_to_piece(special = true) renders them, built lazily. */
  private readonly pieceCache: (Uint8Array | undefined)[];
  private readonly encoder = new TextEncoder();

  /** Builds the tokenizer from GGUF metadata (`parseGguf(bytes).metadata`). */
  static fromGguf(metadata: Map<string, GgufValue>): Tokenizer {
    const model = metadata.get("tokenizer.ggml.model");
    if (model === undefined) throw new Error("GGUF has no tokenizer.ggml.model");
    if (model !== "llama") {
      throw new Error(
        `unsupported tokenizer model ${JSON.stringify(model)}: only "llama" (SentencePiece) ` +
          "is implemented",
      );
    }
    const tokens = metadata.get("tokenizer.ggml.tokens");
    if (!Array.isArray(tokens) || tokens.some((t) => typeof t !== "string")) {
      throw new Error("GGUF tokenizer.ggml.tokens: expected an array of strings");
    }
    const n = tokens.length;
    // llama.cpp ignores an id outside the vocab (e.g. 0xFFFFFFFF) and keeps the default.
    const id = (key: string): number | undefined => {
      const v = metaNumber(metadata, `tokenizer.ggml.${key}`);
      return v !== undefined && v >= 0 && v < n ? v : undefined;
    };
    return new Tokenizer({
      tokens: tokens as string[],
      scores: metaNumberArray(metadata, "tokenizer.ggml.scores"),
      tokenTypes: metaNumberArray(metadata, "tokenizer.ggml.token_type"),
      bosId: id("bos_token_id"),
      eosId: id("eos_token_id"),
      unkId: id("unknown_token_id"),
      addBos: metaBool(metadata, "tokenizer.ggml.add_bos_token"),
      addEos: metaBool(metadata, "tokenizer.ggml.add_eos_token"),
      addSpacePrefix: metaBool(metadata, "tokenizer.ggml.add_space_prefix"),
    });
  }

  constructor(vocab: TokenizerVocab) {
    const n = vocab.tokens.length;
    if (n === 0) throw new Error("tokenizer vocabulary is empty");
    if (vocab.scores && vocab.scores.length < n) {
      throw new Error(`tokenizer scores: ${vocab.scores.length} entries for ${n} tokens`);
    }
    if (vocab.tokenTypes && vocab.tokenTypes.length < n) {
      throw new Error(`tokenizer token types: ${vocab.tokenTypes.length} entries for ${n} tokens`);
    }
    this.vocabSize = n;
    this.pieces = new Array<string>(n);
    this.scores = new Float64Array(n);
    this.types = new Uint8Array(n);
    this.attrs = new Uint8Array(n);
    this.pieceCache = new Array<Uint8Array | undefined>(n);
    for (let i = 0; i < n; i++) {
      let text = vocab.tokens[i] as string;
      if (text === "") text = `[EMPTY_${i}]`; // as llama.cpp does
      if (this.textToId.has(text)) {
        throw new Error(`tokenizer vocabulary has a duplicate token ${JSON.stringify(text)}`);
      }
      this.textToId.set(text, i);
      this.pieces[i] = text;
      this.scores[i] = vocab.scores ? (vocab.scores[i] as number) : 0;
      const type = vocab.tokenTypes ? (vocab.tokenTypes[i] as number) : TokenType.NORMAL;
      this.types[i] = type;
      this.attrs[i] = TYPE_TO_ATTR[type] ?? 0;
    }

    const special = (v: number | null | undefined, dflt: number): number | null => {
      if (v === null) return null;
      const id = v ?? dflt;
      if (!Number.isInteger(id) || id < 0 || id >= n) {
        if (v === undefined) return null; // the default is out of a tiny vocab
        throw new Error(`special token id ${id} is outside the vocabulary (size ${n})`);
      }
      return id;
    };
    this.bosId = special(vocab.bosId, 1);
    this.eosId = special(vocab.eosId, 2);
    this.unkId = special(vocab.unkId, 0);
    this.addBos = vocab.addBos ?? true;
    this.addEos = vocab.addEos ?? false;
    this.addSpacePrefix = vocab.addSpacePrefix ?? true;

    for (let b = 0; b < 256; b++) {
      const hex = `<0x${HEX[b >> 4]}${HEX[b & 15]}>`;
      const id =
        this.textToId.get(hex) ??
        (b < 0x80 ? this.textToId.get(String.fromCharCode(b)) : undefined);
      this.byteIds[b] = id ?? -1;
    }

    for (const [text, id] of this.textToId) {
      if (EOG_TEXTS.has(text)) {
        this.eog.add(id);
        this.attrs[id] = (this.attrs[id] as number) | ATTR_CONTROL;
      }
    }
    if (this.eosId !== null) this.eog.add(this.eosId);

    for (let i = 0; i < n; i++) {
      if ((this.attrs[i] as number) & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
        this.specials.push(i);
      }
    }
    // Longest text (in UTF-8 bytes) first; ties by id (llama.cpp's std::sort leaves them open).
    const byteLen = (id: number): number => this.encoder.encode(this.pieces[id] as string).length;
    const lens = new Map(this.specials.map((id) => [id, byteLen(id)]));
    this.specials.sort((a, b) => (lens.get(b) as number) - (lens.get(a) as number) || a - b);
  }

  // -------------------------------------------------------------------------------------------
  // Token properties

  private check(id: number): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`token id ${id} is outside the vocabulary (size ${this.vocabSize})`);
    }
  }

  /** The GGUF token type of `id` (see TokenType). */
  tokenType(id: number): number {
    this.check(id);
    return this.types[id] as number;
  }

  /** Whether llama.cpp treats `id` as a control token (GGUF type 3, or a forced EOG text). */
  isControl(id: number): boolean {
    this.check(id);
    return ((this.attrs[id] as number) & ATTR_CONTROL) !== 0;
  }

  /** Whether `id` ends generation (EOS, or an EOG text such as "</s>", "<|im_end|>"). */
  isEog(id: number): boolean {
    return this.eog.has(id);
  }

  /** The id of the token whose vocab text is exactly `text`, if any. */
  tokenId(text: string): number | undefined {
    return this.textToId.get(text);
  }

  /** The raw vocab text of `id` ("▁the", "<s>", "<0x0A>"). */
  tokenPiece(id: number): string {
    this.check(id);
    return this.pieces[id] as string;
  }

  /** The byte value of a byte-fallback token (`<0xXX>`, type 6), else null. */
  tokenByte(id: number): number | null {
    this.check(id);
    if (!((this.attrs[id] as number) & ATTR_BYTE)) return null;
    const v = Number.parseInt((this.pieces[id] as string).slice(3, 5), 16); // strtol in llama.cpp
    return Number.isNaN(v) ? 0 : v & 0xff;
  }

  /**
   * The bytes `id` contributes to text, as llama_token_to_piece(special = true, lstrip = 0):
   * UTF-8 of the piece with "▁" as " "; the raw byte for byte tokens; control/unknown/user-defined
   * tokens as their text; unused/undefined tokens as nothing. For logprobs `bytes`.
   */
  tokenBytes(id: number): number[] {
    return Array.from(this.pieceBytes(id, true));
  }

  /**
   * Display text of `id` for logprobs `token`: the decoded tokenBytes, except that a single
   * non-ASCII byte (half of a character) is written "byte: \\xe2" as llama.cpp's server does.
   */
  tokenText(id: number): string {
    const bytes = this.pieceBytes(id, true);
    if (bytes.length === 1 && (bytes[0] as number) >= 0x80) {
      return `byte: \\x${(bytes[0] as number).toString(16)}`;
    }
    return new TextDecoder().decode(bytes);
  }

  /** Piece bytes of `id`; control/unknown tokens are empty unless `special`. Do not mutate. */
  pieceBytes(id: number, special: boolean): Uint8Array {
    this.check(id);
    const attr = this.attrs[id] as number;
    if (!special && attr & (ATTR_CONTROL | ATTR_UNKNOWN)) return EMPTY;
    let bytes = this.pieceCache[id];
    if (bytes === undefined) {
      const text = this.pieces[id] as string;
      if (attr & (ATTR_CONTROL | ATTR_UNKNOWN | ATTR_USER_DEFINED)) {
        bytes = this.encoder.encode(text);
      } else if (attr & ATTR_NORMAL) {
        bytes = this.encoder.encode(text.replaceAll(SPACE_ESCAPE, " "));
      } else if (attr & ATTR_BYTE) {
        bytes = Uint8Array.of(this.tokenByte(id) as number);
      } else {
        bytes = EMPTY; // unused / undefined: suppressed like control tokens
      }
      this.pieceCache[id] = bytes;
    }
    return bytes;
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  /** Text to token ids, as llama_tokenize(text, add_special, parse_special) for an SPM vocab. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos ?? this.addBos) {
      if (this.bosId === null) throw new Error("encode: addBos but the vocabulary has no BOS");
      out.push(this.bosId);
    }
    if (text.length > 0) {
      let prevSpecial = true; // the first text fragment gets the space prefix
      for (const fragment of this.partition(wellFormed(text), opts.parseSpecial ?? false)) {
        if (typeof fragment === "number") {
          out.push(fragment);
          prevSpecial = true;
        } else {
          const spaced = this.addSpacePrefix && prevSpecial ? ` ${fragment}` : fragment;
          this.encodeFragment(spaced.replaceAll(" ", SPACE_ESCAPE), out);
          prevSpecial = false;
        }
      }
    }
    if (opts.addEos ?? this.addEos) {
      if (this.eosId === null) throw new Error("encode: addEos but the vocabulary has no EOS");
      out.push(this.eosId);
    }
    return out;
  }

  /**
   * Splits text into raw text fragments and special token ids (tokenizer_st_partition): for each
   * special token, longest first, every occurrence in every remaining text fragment is cut out.
   */
  private partition(text: string, parseSpecial: boolean): (string | number)[] {
    let fragments: (string | number)[] = [text];
    for (const id of this.specials) {
      const attr = this.attrs[id] as number;
      if (!parseSpecial && attr & (ATTR_CONTROL | ATTR_UNKNOWN)) continue;
      const piece = this.pieces[id] as string;
      let next: (string | number)[] | null = null;
      for (let f = 0; f < fragments.length; f++) {
        const frag = fragments[f] as string | number;
        const at = typeof frag === "string" ? frag.indexOf(piece) : -1;
        if (at < 0) {
          next?.push(frag);
          continue;
        }
        next ??= fragments.slice(0, f);
        let from = 0;
        for (let m = at; m >= 0; m = (frag as string).indexOf(piece, from)) {
          if (m > from) next.push((frag as string).slice(from, m));
          next.push(id);
          from = m + piece.length;
        }
        if (from < (frag as string).length) next.push((frag as string).slice(from));
      }
      if (next) fragments = next;
    }
    return fragments;
  }

  /** llm_tokenizer_spm_session::tokenize on one escaped, non-empty fragment. */
  private encodeFragment(text: string, out: number[]): void {
    const units = text.length;
    // Symbols are characters (code points) addressed by UTF-16 offset and length; the text is
    // well-formed, so they are exactly llama.cpp's UTF-8 characters. Growth in UTF-16 length
    // detects a stale bigram just as llama.cpp's byte-length check does.
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

    const queue = new BigramQueue();
    const tryAdd = (left: number, right: number): void => {
      if (left < 0 || right < 0) return;
      const size = (len[left] as number) + (len[right] as number);
      const s = start[left] as number;
      const id = this.textToId.get(text.slice(s, s + size));
      if (id === undefined) return;
      queue.push(this.scores[id] as number, left, right, size);
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

    // Every merged symbol is a vocab token, so llama.cpp's rev_merge resegmentation never
    // applies: a symbol is its token, or (a single character outside the vocab) its bytes.
    for (let i = 0; i !== -1; i = next[i] as number) {
      const s = start[i] as number;
      const sym = text.slice(s, s + (len[i] as number));
      const id = this.textToId.get(sym);
      if (id !== undefined) {
        out.push(id);
        continue;
      }
      for (const b of this.encoder.encode(sym)) {
        const byteId = this.byteIds[b] as number;
        if (byteId >= 0) out.push(byteId);
        else if (this.unkId !== null) out.push(this.unkId);
        else throw new Error(`encode: no token for byte 0x${b.toString(16)} and no UNK token`);
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Decoding

  /** The UTF-8 bytes of decode(ids, opts) before UTF-8 decoding. */
  decodeBytes(ids: readonly number[], opts: DecodeOptions = {}): Uint8Array {
    const special = opts.special ?? false;
    const parts: Uint8Array[] = [];
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      let bytes = this.pieceBytes(ids[i] as number, special);
      if (i === 0 && (opts.stripLeadingSpace ?? this.addSpacePrefix) && bytes[0] === 0x20) {
        bytes = bytes.subarray(1);
      }
      parts.push(bytes);
      total += bytes.length;
    }
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  /** Token ids to text, as llama_detokenize(remove_special = false); see the module header. */
  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return new TextDecoder().decode(this.decodeBytes(ids, opts));
  }

  /** A decoder for ids arriving one by one; its output concatenates to decode(ids, opts). */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, opts);
  }
}

/**
 * Incremental decode: push(id) returns the text completed by that token, holding back a partial
 * UTF-8 character formed by byte tokens until its remaining bytes arrive (or flush() ends it,
 * giving U+FFFD). The concatenation of every push() and the final flush() equals
 * tokenizer.decode(ids, opts) exactly, including the first-token leading-space rule.
 */
export class StreamDecoder {
  private readonly utf8 = new TextDecoder("utf-8");
  private readonly special: boolean;
  private strip: boolean;

  constructor(
    private readonly tokenizer: Tokenizer,
    opts: DecodeOptions = {},
  ) {
    this.special = opts.special ?? false;
    this.strip = opts.stripLeadingSpace ?? tokenizer.addSpacePrefix;
  }

  push(id: number): string {
    let bytes = this.tokenizer.pieceBytes(id, this.special);
    if (this.strip) {
      this.strip = false; // only the first token, even when it renders nothing
      if (bytes[0] === 0x20) bytes = bytes.subarray(1);
    }
    return bytes.length > 0 ? this.utf8.decode(bytes, { stream: true }) : "";
  }

  /** Ends the text: a held-back partial character becomes U+FFFD. */
  flush(): string {
    return this.utf8.decode();
  }
}
