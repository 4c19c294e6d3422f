/**
 * SentencePiece BPE as llama.cpp runs it for `tokenizer.ggml.model` "llama"
 * (llm_tokenizer_spm_session). Pure.
 *
 * A fragment gets a leading " " when the vocab adds a space prefix and the fragment is the first
 * or follows a special token (llama.cpp's `is_prev_special`), has every " " replaced by U+2581
 * "▁", and is split into characters. The adjacent pair whose concatenation is a vocab token with
 * the highest score merges first (ties: the leftmost), repeatedly. Each final symbol is emitted
 * as its token, or when it is not in the vocab as one `<0xXX>` byte token per UTF-8 byte (then
 * the single-character token, then UNK; llama.cpp would throw there). A NORMAL token renders
 * with "▁" as " ".
 */
import { mergeSymbols } from "./merge.ts";
import type { TextModel } from "./text-model.ts";

const SPACE_ESCAPE = "\u2581"; // "▁"

export class SpmModel implements TextModel {
  readonly name = "llama";
  readonly rendersByteTokens = true;
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly textToId: ReadonlyMap<string, number>,
    private readonly scores: Float64Array,
    /** Token id for each byte value (byte_to_token), -1 when none. */
    private readonly byteIds: Int32Array,
    private readonly unkId: number | null,
    private readonly addSpacePrefix: boolean,
  ) {}

  encodeFragment(fragment: string, afterSpecial: boolean, out: number[]): void {
    const spaced = this.addSpacePrefix && afterSpecial ? ` ${fragment}` : fragment;
    const text = spaced.replaceAll(" ", SPACE_ESCAPE);
    mergeSymbols(
      text,
      (s, ln, rn) => {
        const id = this.textToId.get(text.slice(s, s + ln + rn));
        return id === undefined ? undefined : (this.scores[id] as number);
      },
      (s, n) => {
        // Every merged symbol is a vocab token, so llama.cpp's rev_merge resegmentation never
        // applies: a symbol is its token, or (a single character outside the vocab) its bytes.
        const sym = text.slice(s, s + n);
        const id = this.textToId.get(sym);
        if (id !== undefined) {
          out.push(id);
          return;
        }
        for (const b of this.encoder.encode(sym)) {
          const byteId = this.byteIds[b] as number;
          if (byteId >= 0) out.push(byteId);
          else if (this.unkId !== null) out.push(this.unkId);
          else throw new Error(`encode: no token for byte 0x${b.toString(16)} and no UNK token`);
        }
      },
    );
  }

  normalBytes(text: string): Uint8Array {
    return this.encoder.encode(text.replaceAll(SPACE_ESCAPE, " "));
  }
}
