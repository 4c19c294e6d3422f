/** NDJSON framing of GenerateEvent streams over RPC. Pure (TextEncoder/TextDecoder only). */
import type { GenerateEvent } from "./messages.ts";

const encoder = new TextEncoder();

export function encodeEvent(e: GenerateEvent): Uint8Array {
  return encoder.encode(`${JSON.stringify(e)}\n`);
}

/** Splits NDJSON chunks into events; keeps a partial line between pushes. */
export class EventDecoder {
  private buf = "";
  private readonly decoder = new TextDecoder();

  push(chunk: Uint8Array): GenerateEvent[] {
    this.buf += this.decoder.decode(chunk, { stream: true });
    const lines = this.buf.split("\n");
    this.buf = lines.pop() ?? "";
    return lines.filter((l) => l.length > 0).map((l) => JSON.parse(l) as GenerateEvent);
  }
}
