/**
 * Byte-level BPE as llama.cpp runs it for `tokenizer.ggml.model` "gpt2" (llm_tokenizer_bpe_session,
 * llama_decode_text). Pure.
 *
 * Encoding. The pre-tokenizer (pre-tokenizers.ts) splits a fragment into words. Each word's UTF-8
 * bytes are written as characters through GPT-2's byte-to-unicode table (printable Latin-1 bytes
 * stand for themselves, the other 68 bytes for U+0100..U+0143, so " " is "Ġ"), and the adjacent
 * pair with the lowest rank in `tokenizer.ggml.merges` merges first (ties: the leftmost),
 * repeatedly. Each final symbol is emitted as its token; a symbol that is not a token (a vocab
 * missing a merge result) is emitted as the single-character tokens of its ASCII bytes, and its
 * other bytes are dropped, as llama.cpp does. With `ignore_merges` (the Llama 3 family) a word
 * that is itself a token is emitted as that token. Results are cached per word.
 *
 * Decoding. A NORMAL token's text maps back through the table to bytes; a character outside the
 * table renders as llama.cpp's "[UNK_BYTE_0x..]" marker.
 */
import { mergeSymbols } from "./merge.ts";
import type { PreTokenizer } from "./pre-tokenizers.ts";
import type { TextModel } from "./text-model.ts";

/** GPT-2's bytes_to_unicode: the character standing for each byte value. */
const BYTE_TO_CHAR: string[] = (() => {
  const table = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return table;
})();
/** The inverse: byte value per character code, -1 for characters outside the table. */
const CHAR_TO_BYTE: Int16Array = (() => {
  const inverse = new Int16Array(256 + 68).fill(-1);
  BYTE_TO_CHAR.forEach((ch, b) => {
    inverse[ch.charCodeAt(0)] = b;
  });
  return inverse;
})();

const MAX_CACHED_WORDS = 16384;

export class BpeModel implements TextModel {
  readonly name = "gpt2";
  readonly rendersByteTokens = false;
  /** Merge rank by "left right" (the merges entry itself). */
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, readonly number[]>();
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly textToId: ReadonlyMap<string, number>,
    merges: readonly string[],
    private readonly preTokenizer: PreTokenizer,
  ) {
    for (let i = 0; i < merges.length; i++) {
      const merge = merges[i] as string;
      // llama.cpp splits at the first space after the first character; entries without one
      // (malformed) cannot match a pair. A later duplicate keeps the first rank, as emplace does.
      const at = merge.indexOf(" ", 1);
      if (at > 0 && !this.ranks.has(merge)) this.ranks.set(merge, i);
    }
  }

  encodeFragment(text: string, _afterSpecial: boolean, out: number[]): void {
    for (const word of this.preTokenizer.split(text)) {
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = this.encodeWord(word);
        if (this.cache.size >= MAX_CACHED_WORDS) this.cache.clear();
        this.cache.set(word, ids);
      }
      for (const id of ids) out.push(id);
    }
  }

  private encodeWord(word: string): number[] {
    let encoded = "";
    for (const b of this.encoder.encode(word)) encoded += BYTE_TO_CHAR[b];
    if (this.preTokenizer.ignoreMerges) {
      const whole = this.textToId.get(encoded);
      if (whole !== undefined) return [whole];
    }
    const ids: number[] = [];
    mergeSymbols(
      encoded,
      (s, ln, rn) => {
        const rank = this.ranks.get(
          `${encoded.slice(s, s + ln)} ${encoded.slice(s + ln, s + ln + rn)}`,
        );
        return rank === undefined ? undefined : -rank;
      },
      (s, n) => {
        const sym = encoded.slice(s, s + n);
        const id = this.textToId.get(sym);
        if (id !== undefined) {
          ids.push(id);
          return;
        }
        for (const b of this.encoder.encode(sym)) {
          const single = b < 0x80 ? this.textToId.get(String.fromCharCode(b)) : undefined;
          if (single !== undefined) ids.push(single);
        }
      },
    );
    return ids;
  }

  normalBytes(text: string): Uint8Array {
    const bytes: number[] = [];
    for (const ch of text) {
      const code = ch.codePointAt(0) as number;
      const b = code < CHAR_TO_BYTE.length ? (CHAR_TO_BYTE[code] as number) : -1;
      if (b >= 0) {
        bytes.push(b);
        continue;
      }
      const hex = Array.from(this.encoder.encode(ch), (x) => x.toString(16).padStart(2, "0"));
      bytes.push(...this.encoder.encode(`[UNK_BYTE_0x${hex.join("")}${text}]`));
    }
    return Uint8Array.from(bytes);
  }
}
