/**
 * The seam between the vocabulary-level tokenizer (special tokens, BOS/EOS, piece rendering of
 * control and byte tokens: ../tokenizer.ts) and a tokenizer model's own algorithm: SentencePiece
 * (spm.ts, GGUF `tokenizer.ggml.model` "llama") or byte-level BPE (bpe.ts, "gpt2"). Pure.
 */

/** GGUF `tokenizer.ggml.model` values this project implements. */
export type TokenizerModelName = "llama" | "gpt2";

export interface TextModel {
  readonly name: TokenizerModelName;
  /**
   * Appends the ids of one fragment of well-formed text that holds no special token.
   * `afterSpecial`: it is the first fragment or follows a special token (SPM's space prefix).
   */
  encodeFragment(text: string, afterSpecial: boolean, out: number[]): void;
  /** The bytes the text of a NORMAL token stands for. */
  normalBytes(text: string): Uint8Array;
  /** Whether BYTE tokens (`<0xXX>`) render as their byte (SPM) or as nothing (BPE). */
  readonly rendersByteTokens: boolean;
}
