/**
 * NDJSON framing of GenerateEvent streams over RPC: the one encoder (the Npu) and the one decoder
 * (the worker's SSE path and the JobExecutor's batch jobs). Pure (TextEncoder/TextDecoder only).
 */
import type { GenerateEvent } from "./messages.ts";

const encoder = new TextEncoder();
const NEWLINE = encoder.encode("\n");

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

/** What decodeEvents reads: a byte stream's reader (a ReadableStreamDefaultReader). */
export interface ByteReader {
  read(): Promise<{ done: true; value?: Uint8Array } | { done: false; value: Uint8Array }>;
  cancel(): Promise<unknown>;
  releaseLock(): void;
}

/**
 * Decodes an NDJSON GenerateEvent stream. Returning early (`return()`, `break` in for-await)
 * cancels the reader, also while a read is pending, so the upstream stream is released.
 */
export function decodeEvents(reader: ByteReader): AsyncGenerator<GenerateEvent> {
  let finished = false;
  let cancelled = false;
  const gen = (async function* () {
    const decoder = new EventDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        yield* decoder.push(value);
      }
      // A last line without its newline.
      if (!cancelled) yield* decoder.push(NEWLINE);
      finished = true;
    } finally {
      if (finished) reader.releaseLock();
      else await reader.cancel().catch(() => {});
    }
  })();
  const innerReturn = gen.return.bind(gen);
  // An async generator's return() waits for a pending next(); cancelling the reader first
  // settles that read (done), so a stalled upstream cannot hold the generator.
  gen.return = (value) => {
    if (!finished && !cancelled) {
      cancelled = true;
      void reader.cancel().catch(() => {});
    }
    return innerReturn(value);
  };
  return gen;
}
