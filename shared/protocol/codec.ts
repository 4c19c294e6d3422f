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
 * Decodes an NDJSON GenerateEvent stream, one batch per chunk read (a chunk may carry several
 * lines when the Npu coalesced them). Returning early (`return()`, `break` in for-await) cancels
 * the reader, also while a read is pending, so the upstream stream is released.
 */
export function decodeEventBatches(reader: ByteReader): AsyncGenerator<GenerateEvent[]> {
  let finished = false;
  let cancelled = false;
  const gen = (async function* () {
    const decoder = new EventDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const batch = decoder.push(value);
        if (batch.length > 0) yield batch;
      }
      // A last line without its newline.
      const last = cancelled ? [] : decoder.push(NEWLINE);
      finished = true;
      if (last.length > 0) yield last;
    } finally {
      if (finished) reader.releaseLock();
      else await reader.cancel().catch(() => {});
    }
  })();
  return releasingFirst(gen, () => {
    if (!finished && !cancelled) {
      cancelled = true;
      void reader.cancel().catch(() => {});
    }
  });
}

/** The events of `decodeEventBatches` one by one (same early-release behaviour). */
export function decodeEvents(reader: ByteReader): AsyncGenerator<GenerateEvent> {
  const batches = decodeEventBatches(reader);
  const gen = (async function* () {
    for await (const batch of batches) yield* batch;
  })();
  return releasingFirst(gen, () => void batches.return(undefined));
}

/**
 * An async generator's return() waits for a pending next(); `release` runs first (cancelling the
 * reader settles that read), so a stalled upstream cannot hold the generator.
 */
function releasingFirst<T>(gen: AsyncGenerator<T>, release: () => void): AsyncGenerator<T> {
  const innerReturn = gen.return.bind(gen);
  gen.return = (value) => {
    release();
    return innerReturn(value);
  };
  return gen;
}
