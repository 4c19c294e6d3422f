/**
 * Incremental detokenisation for streamed text. Pure.
 */
import type { DecodeOptions } from "./tokenizer.ts";

/** A leading U+FEFF is text like any other (TextDecoder would drop it by default). */
export const UTF8_KEEP_BOM = { ignoreBOM: true };

/** What StreamDecoder needs of a tokenizer. */
export interface PieceSource {
  readonly addSpacePrefix: boolean;
  pieceBytes(id: number, special: boolean): Uint8Array;
}

/**
 * Incremental decode: push(id) returns the text completed by that token, holding back a partial
 * UTF-8 character (from SPM byte tokens, or a BPE token that ends inside a character) until its
 * remaining bytes arrive (or flush() ends it, giving U+FFFD). The concatenation of every push()
 * and the final flush() equals tokenizer.decode(ids, opts) exactly, including the first-token
 * leading-space rule.
 */
export class StreamDecoder {
  private readonly utf8 = new TextDecoder("utf-8", UTF8_KEEP_BOM);
  private readonly special: boolean;
  private strip: boolean;

  constructor(
    private readonly tokenizer: PieceSource,
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
