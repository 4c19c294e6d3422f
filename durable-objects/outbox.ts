// The byte stream behind each task's NDJSON events (task-streams.ts owns one per task in flight).

/**
 * A task's byte stream that coalesces under backpressure: a line is handed over at once when the
 * reader is waiting for one, and otherwise joins the lines not yet read, which the next read takes
 * in one chunk. One stream costs one RPC chunk per step while the worker keeps up, and fewer, larger
 * chunks when it does not (many concurrent streams).
 */
export class Outbox {
  private readonly lines: Uint8Array[] = [];
  private numBytes = 0;
  private waiting = false;
  private done = false;
  private controller!: ReadableStreamDefaultController<Uint8Array>;
  readonly stream: ReadableStream<Uint8Array>;

  constructor(onCancel: () => void) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.controller = c;
        },
        pull: () => {
          if (this.numBytes > 0) this.hand();
          else this.waiting = true;
        },
        cancel: () => {
          this.done = true;
          onCancel();
        },
      },
      { highWaterMark: 0 },
    );
  }

  push(line: Uint8Array): void {
    if (this.done) return;
    this.lines.push(line);
    this.numBytes += line.byteLength;
    if (this.waiting) this.hand();
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    try {
      if (this.numBytes > 0) this.hand();
      this.controller.close();
    } catch {
      // cancelled meanwhile
    }
  }

  private hand(): void {
    this.waiting = false;
    let chunk = this.lines[0] as Uint8Array;
    if (this.lines.length > 1) {
      chunk = new Uint8Array(this.numBytes);
      let at = 0;
      for (const l of this.lines) {
        chunk.set(l, at);
        at += l.byteLength;
      }
    }
    this.lines.length = 0;
    this.numBytes = 0;
    this.controller.enqueue(chunk);
  }
}
