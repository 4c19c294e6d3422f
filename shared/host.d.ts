/** The only host globals shared/ may touch (shared/ is compiled with `types: []`). */
declare const console: {
  log(...a: unknown[]): void;
  warn(...a: unknown[]): void;
  error(...a: unknown[]): void;
};
declare class TextEncoder {
  encode(s: string): Uint8Array;
}
declare class TextDecoder {
  constructor(label?: string, opts?: { fatal?: boolean; ignoreBOM?: boolean });
  decode(b?: Uint8Array, opts?: { stream?: boolean }): string;
}
