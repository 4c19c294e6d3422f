/**
 * Text <-> token ids for a GGUF vocabulary, exactly as llama.cpp does it (llama-vocab.cpp:
 * `tokenizer_st_partition`, `token_to_piece`, `detokenize`), for the two tokenizer models in
 * tokenizer/: SentencePiece (`tokenizer.ggml.model` "llama", tokenizer/spm.ts) and byte-level
 * BPE ("gpt2", tokenizer/bpe.ts with the pre-tokenizers of tokenizer/pre-tokenizers.ts), chosen
 * from the GGUF metadata. Pure: no host APIs beyond TextEncoder/TextDecoder.
 *
 * Encoding. The text is split into fragments at special-token texts (user-defined tokens always;
 * control and unknown tokens, e.g. "<s>", only with `parseSpecial`), longest token text first.
 * Each text fragment goes to the model (SPM adds its space prefix to the first fragment and to one
 * that follows a special token); BOS and EOS go around the result when asked for.
 *
 * Decoding (llama_detokenize with remove_special = false). Each id renders as its piece bytes:
 * normal tokens through the model (SPM: "▁" -> " "; BPE: the byte-to-unicode table reversed);
 * SPM byte tokens as their raw byte; user-defined tokens verbatim; control and unknown tokens as
 * nothing (their text with `special`); unused/undefined (and BPE byte) tokens as nothing.
 * Leading-space rule: when the vocab adds a space prefix, ONE leading " " is removed from the
 * piece of `ids[0]` only, whatever that token is. A BOS (or any control token) at ids[0] renders
 * nothing and so consumes the strip: decode([BOS, "▁Once"]) is " Once" while decode(["▁Once"])
 * is "Once". Hence decode(encode(x).slice(1)) === x for SPM text without "▁" or lone surrogates.
 * llama.cpp's `clean_spaces` pass (" ." -> "." for some BPE vocabs) is not applied: llama.cpp's
 * server does not apply it to generated text either, and without it byte-level BPE round-trips.
 * The bytes are decoded as UTF-8 with U+FFFD for invalid sequences (TextDecoder, non-fatal),
 * keeping a leading U+FEFF.
 * Pass `stripLeadingSpace: false` to render a continuation (generated tokens after a prompt),
 * which is what llama.cpp's server streams (token_to_piece with lstrip = 0).
 */

import type { GgufValue } from "../gguf/gguf.ts";
import { BpeModel } from "./bpe.ts";
import { type TokenizerVocab, vocabFromGguf } from "./gguf-vocab.ts";
import { partitionSpecials } from "./partition.ts";
import { PreTokenizer } from "./pre-tokenizers.ts";
import { SpmModel } from "./spm.ts";
import { StreamDecoder, UTF8_KEEP_BOM } from "./stream-decoder.ts";
import type { TextModel, TokenizerModelName } from "./text-model.ts";
import {
  ATTR_BYTE,
  ATTR_CONTROL,
  ATTR_NORMAL,
  ATTR_UNKNOWN,
  ATTR_USER_DEFINED,
  EOG_TEXTS,
  FIM_EOG_TEXTS,
  FIM_TEXTS,
  TokenType,
  TYPE_TO_ATTR,
} from "./token-types.ts";

export type { TokenizerVocab } from "./gguf-vocab.ts";
export { StreamDecoder } from "./stream-decoder.ts";
export type { TokenizerModelName } from "./text-model.ts";
export { TokenType } from "./token-types.ts";

const EMPTY = new Uint8Array(0);
const HEX = "0123456789ABCDEF";

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

/** Replaces lone surrogates by U+FFFD, as UTF-8 encoding does (llama.cpp sees UTF-8 bytes). */
function wellFormed(text: string): string {
  if (!/[\uD800-\uDFFF]/.test(text)) return text;
  return new TextDecoder("utf-8", UTF8_KEEP_BOM).decode(new TextEncoder().encode(text));
}

export class Tokenizer {
  /** `tokenizer.ggml.model`: "llama" (SentencePiece) or "gpt2" (byte-level BPE). */
  readonly model: TokenizerModelName;
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number | null;
  readonly addBos: boolean;
  readonly addEos: boolean;
  readonly addSpacePrefix: boolean;

  private readonly text: TextModel;
  private readonly pieces: string[];
  private readonly types: Uint8Array;
  private readonly attrs: Uint8Array;
  private readonly textToId = new Map<string, number>();
  /** Special tokens for partitioning, longest text first. */
  private readonly specials: number[] = [];
  private readonly eog = new Set<number>();
  /** Piece bytes as token_to_piece(special = true) renders them, built lazily. */
  private readonly pieceCache: (Uint8Array | undefined)[];
  private readonly encoder = new TextEncoder();

  /** Builds the tokenizer from GGUF metadata (`parseGguf(bytes).metadata`). */
  static fromGguf(metadata: Map<string, GgufValue>): Tokenizer {
    return new Tokenizer(vocabFromGguf(metadata));
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
    this.model = vocab.model ?? "llama";
    const isBpe = this.model === "gpt2";
    this.vocabSize = n;
    this.pieces = new Array<string>(n);
    const scores = new Float64Array(n);
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
      scores[i] = vocab.scores ? (vocab.scores[i] as number) : 0;
      const type = vocab.tokenTypes ? (vocab.tokenTypes[i] as number) : TokenType.NORMAL;
      this.types[i] = type;
      this.attrs[i] = TYPE_TO_ATTR[type] ?? 0;
    }

    const special = (v: number | null | undefined, dflt: number | null): number | null => {
      if (v === null || (v === undefined && dflt === null)) return null;
      const id = v ?? (dflt as number);
      if (!Number.isInteger(id) || id < 0 || id >= n) {
        if (v === undefined) return null; // the default is out of a tiny vocab
        throw new Error(`special token id ${id} is outside the vocabulary (size ${n})`);
      }
      return id;
    };
    // llama.cpp's defaults per model (llama_vocab::impl::load).
    this.bosId = special(vocab.bosId, isBpe ? 11 : 1);
    this.eosId = special(vocab.eosId, isBpe ? 11 : 2);
    this.unkId = special(vocab.unkId, isBpe ? null : 0);
    const pre = isBpe ? new PreTokenizer(vocab.pre ?? "default") : null;
    this.addBos = vocab.addBos ?? (pre ? pre.addBosByDefault : true);
    this.addEos = vocab.addEos ?? false;
    this.addSpacePrefix = vocab.addSpacePrefix ?? !isBpe;

    if (pre) {
      if (!vocab.merges) throw new Error("a gpt2 (BPE) vocabulary needs tokenizer.ggml.merges");
      this.text = new BpeModel(this.textToId, vocab.merges, pre);
    } else {
      const byteIds = new Int32Array(256);
      for (let b = 0; b < 256; b++) {
        const hex = `<0x${HEX[b >> 4]}${HEX[b & 15]}>`;
        const id =
          this.textToId.get(hex) ??
          (b < 0x80 ? this.textToId.get(String.fromCharCode(b)) : undefined);
        byteIds[b] = id ?? -1;
      }
      this.text = new SpmModel(this.textToId, scores, byteIds, this.unkId, this.addSpacePrefix);
    }

    for (const [text, id] of this.textToId) {
      if (EOG_TEXTS.has(text) || FIM_EOG_TEXTS.has(text)) this.eog.add(id);
      if (EOG_TEXTS.has(text) || FIM_TEXTS.has(text)) {
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

  /** The raw vocab text of `id` ("▁the", "<s>", "<0x0A>", "Ġthe"). */
  tokenPiece(id: number): string {
    this.check(id);
    return this.pieces[id] as string;
  }

  /** The byte value of an SPM byte-fallback token (`<0xXX>`, type 6), else null. */
  tokenByte(id: number): number | null {
    this.check(id);
    if (!this.text.rendersByteTokens || !((this.attrs[id] as number) & ATTR_BYTE)) return null;
    const v = Number.parseInt((this.pieces[id] as string).slice(3, 5), 16); // strtol in llama.cpp
    return Number.isNaN(v) ? 0 : v & 0xff;
  }

  /**
   * The bytes `id` contributes to text, as llama_token_to_piece(special = true, lstrip = 0):
   * the model's bytes of a normal token; the raw byte for SPM byte tokens; control/unknown/
   * user-defined tokens as their text; unused/undefined tokens as nothing. For logprobs `bytes`.
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
    return new TextDecoder("utf-8", UTF8_KEEP_BOM).decode(bytes);
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
        bytes = this.text.normalBytes(text);
      } else if (attr & ATTR_BYTE && this.text.rendersByteTokens) {
        bytes = Uint8Array.of(this.tokenByte(id) as number);
      } else {
        bytes = EMPTY; // unused / undefined (and BPE byte tokens): suppressed like control
      }
      this.pieceCache[id] = bytes;
    }
    return bytes;
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  /** Text to token ids, as llama_tokenize(text, add_special, parse_special). */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    if (opts.addBos ?? this.addBos) {
      if (this.bosId === null) throw new Error("encode: addBos but the vocabulary has no BOS");
      out.push(this.bosId);
    }
    if (text.length > 0) {
      let afterSpecial = true; // the first text fragment gets SPM's space prefix
      const parseSpecial = opts.parseSpecial ?? false;
      for (const fragment of this.partition(wellFormed(text), parseSpecial)) {
        if (typeof fragment === "number") {
          out.push(fragment);
          afterSpecial = true;
        } else {
          this.text.encodeFragment(fragment, afterSpecial, out);
          afterSpecial = false;
        }
      }
    }
    if (opts.addEos ?? this.addEos) {
      if (this.eosId === null) throw new Error("encode: addEos but the vocabulary has no EOS");
      out.push(this.eosId);
    }
    return out;
  }

  /** Text fragments and special token ids (see tokenizer/partition.ts). */
  private partition(text: string, parseSpecial: boolean): (string | number)[] {
    const skip = parseSpecial ? 0 : ATTR_CONTROL | ATTR_UNKNOWN;
    return partitionSpecials(text, this.specials, this.pieces, this.attrs, skip);
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
    return new TextDecoder("utf-8", UTF8_KEEP_BOM).decode(this.decodeBytes(ids, opts));
  }

  /** A decoder for ids arriving one by one; its output concatenates to decode(ids, opts). */
  createStreamDecoder(opts: DecodeOptions = {}): StreamDecoder {
    return new StreamDecoder(this, opts);
  }
}
