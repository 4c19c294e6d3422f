/**
 * The communication module on the fabric (XCCL's send/recv and A2E/E2A dispatch/combine).
 *
 * A message is one per-step activation region: (kind, step, layer, attempt, from) names it, its
 * bytes are sizes and offsets first (an Int32 header), then the payload rows (f32). The receiver's
 * Inbox keeps regions in memory until a `gather` takes them; a `gather` of n parts is the barrier:
 * it resolves once all n senders' parts for (kind, step, layer, attempt) are in (an explicit empty
 * part counts), and rejects with CommTimeoutError after the timeout, so a late or failed peer
 * fails the step instead of hanging it. `attempt` is 0 for a step's exchange; an attention rank
 * that replays a (layer, step) after an expert rank failed over sends attempt 1, 2, ... (a gather
 * it gives up is `abandon`ed: its late parts are dropped). Counters per (layer, step): bytes,
 * messages and wait time.
 *
 * Pure: the host gives the clock and timers (`CommClock`) and the way to reach a peer
 * (`CommPeer.deliver`: in-process, or an RPC into the peer DO).
 */

export type CommKind = "a2e" | "e2a";

export interface CommMessage {
  kind: CommKind;
  step: number;
  layer: number;
  /** Sender's rank index among its role (attention rank for a2e, expert rank for e2a). */
  from: number;
  /** 0 for a step's exchange; n for the n-th replay of the (layer, step) (absent: 0). */
  attempt?: number;
  bytes: Uint8Array;
}

/** The receiving end of a peer: stores the message in the peer's inbox. */
export interface CommPeer {
  deliver(msg: CommMessage): Promise<void>;
}

export interface CommClock {
  /** Milliseconds, monotonic enough for durations. */
  now(): number;
  /** Calls fn after ms; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

export class CommTimeoutError extends Error {
  override name = "CommTimeoutError";
}

/** Counters of one (layer, step) on one rank. */
export interface StepComm {
  layer: number;
  step: number;
  bytesSent: number;
  bytesReceived: number;
  /** Payload (activation rows) bytes sent: the (token, destination) pairs times hidden x 4. */
  payloadBytesSent: number;
  messagesSent: number;
  messagesReceived: number;
  /** Time spent in gather barriers. */
  waitMs: number;
  /**
   * Compute on this rank for the layer: an attention rank's time from the step's start or the
   * previous exchange to this layer's dispatch; an expert rank's expert FFNs.
   */
  computeMs: number;
}

/** How many (layer, step) entries a rank keeps for reports. */
export const COMM_HISTORY = 256;

export class CommCounters {
  private readonly entries = new Map<string, StepComm>();
  readonly totals: Omit<StepComm, "layer" | "step"> = {
    bytesSent: 0,
    bytesReceived: 0,
    payloadBytesSent: 0,
    messagesSent: 0,
    messagesReceived: 0,
    waitMs: 0,
    computeMs: 0,
  };

  entry(layer: number, step: number): StepComm {
    const key = `${step}/${layer}`;
    let e = this.entries.get(key);
    if (!e) {
      e = {
        layer,
        step,
        bytesSent: 0,
        bytesReceived: 0,
        payloadBytesSent: 0,
        messagesSent: 0,
        messagesReceived: 0,
        waitMs: 0,
        computeMs: 0,
      };
      this.entries.set(key, e);
      if (this.entries.size > COMM_HISTORY) {
        const oldest = this.entries.keys().next().value as string;
        this.entries.delete(oldest);
      }
    }
    return e;
  }

  sent(layer: number, step: number, bytes: number, payloadBytes: number): void {
    const e = this.entry(layer, step);
    e.bytesSent += bytes;
    e.payloadBytesSent += payloadBytes;
    e.messagesSent++;
    this.totals.bytesSent += bytes;
    this.totals.payloadBytesSent += payloadBytes;
    this.totals.messagesSent++;
  }

  received(layer: number, step: number, bytes: number): void {
    const e = this.entry(layer, step);
    e.bytesReceived += bytes;
    e.messagesReceived++;
    this.totals.bytesReceived += bytes;
    this.totals.messagesReceived++;
  }

  waited(layer: number, step: number, ms: number): void {
    this.entry(layer, step).waitMs += ms;
    this.totals.waitMs += ms;
  }

  computed(layer: number, step: number, ms: number): void {
    this.entry(layer, step).computeMs += ms;
    this.totals.computeMs += ms;
  }

  /** The kept entries, oldest first. */
  list(): StepComm[] {
    return [...this.entries.values()].map((e) => ({ ...e }));
  }
}

interface Gathering {
  parts: Map<number, CommMessage>;
  need: number;
  resolve: ((parts: CommMessage[]) => void) | null;
  /** Clears the gather's timer (set while a gather waits). */
  cancel: (() => void) | null;
}

/** A rank's receive side: per-step activation regions in memory, taken by `gather`. */
export class Inbox {
  private readonly pending = new Map<string, Gathering>();
  /** Gathers that timed out (the latest COMM_HISTORY): their late parts are dropped, not kept. */
  private readonly expired = new Set<string>();
  /** Late parts dropped. */
  numLate = 0;

  constructor(
    private readonly clock: CommClock,
    readonly counters: CommCounters,
  ) {}

  deliver(msg: CommMessage): void {
    const attempt = msg.attempt ?? 0;
    if (this.expired.has(key(msg.kind, msg.step, msg.layer, attempt))) {
      this.numLate++;
      return;
    }
    const g = this.slot(msg.kind, msg.step, msg.layer, attempt);
    if (g.parts.has(msg.from)) {
      throw new Error(
        `duplicate ${msg.kind} part from rank ${msg.from} for step ${msg.step} layer ${msg.layer} attempt ${attempt}`,
      );
    }
    g.parts.set(msg.from, msg);
    this.counters.received(msg.layer, msg.step, msg.bytes.byteLength);
    this.settle(key(msg.kind, msg.step, msg.layer, attempt), g);
  }

  /** Number of parts already in for (kind, step, layer, attempt). */
  count(kind: CommKind, step: number, layer: number, attempt = 0): number {
    return this.pending.get(key(kind, step, layer, attempt))?.parts.size ?? 0;
  }

  /**
   * Resolves with the parts of `senders` (sorted by sender) once all are in, or rejects with
   * CommTimeoutError after `timeoutMs` naming the missing senders.
   */
  gather(
    kind: CommKind,
    step: number,
    layer: number,
    senders: readonly number[],
    timeoutMs: number,
    attempt = 0,
  ): Promise<CommMessage[]> {
    const t0 = this.clock.now();
    const k = key(kind, step, layer, attempt);
    const g = this.slot(kind, step, layer, attempt);
    g.need = senders.length;
    return new Promise<CommMessage[]>((resolve, reject) => {
      g.cancel = this.clock.after(timeoutMs, () => {
        this.expire(k, g);
        const missing = senders.filter((s) => !g.parts.has(s));
        reject(
          new CommTimeoutError(
            `${kind} for step ${step} layer ${layer}: no part from rank(s) ${missing.join(", ")} within ${timeoutMs} ms`,
          ),
        );
      });
      g.resolve = (parts) => {
        g.cancel?.();
        this.counters.waited(layer, step, this.clock.now() - t0);
        const bad = parts.find((p) => !senders.includes(p.from));
        if (bad) reject(new Error(`${kind} part from unexpected rank ${bad.from}`));
        else resolve(parts.sort((a, b) => a.from - b.from));
      };
      this.settle(k, g);
    });
  }

  /**
   * Gives up a gather (its exchange is replayed as another attempt): its timer stops, its promise
   * never settles, and parts that still arrive for it are dropped as late.
   */
  abandon(kind: CommKind, step: number, layer: number, attempt = 0): void {
    const k = key(kind, step, layer, attempt);
    const g = this.pending.get(k);
    if (g) this.expire(k, g);
    else this.expired.add(k);
  }

  private expire(k: string, g: Gathering): void {
    g.cancel?.();
    g.resolve = null;
    this.pending.delete(k);
    this.expired.add(k);
    if (this.expired.size > COMM_HISTORY) {
      this.expired.delete(this.expired.values().next().value as string);
    }
  }

  private slot(kind: CommKind, step: number, layer: number, attempt: number): Gathering {
    const k = key(kind, step, layer, attempt);
    let g = this.pending.get(k);
    if (!g) {
      g = { parts: new Map(), need: -1, resolve: null, cancel: null };
      this.pending.set(k, g);
    }
    return g;
  }

  private settle(k: string, g: Gathering): void {
    if (!g.resolve || g.parts.size < g.need) return;
    this.pending.delete(k);
    g.resolve([...g.parts.values()]);
  }
}

function key(kind: CommKind, step: number, layer: number, attempt: number): string {
  return `${kind}/${step}/${layer}/${attempt}`;
}

/** Sends a message to a peer and counts it (payloadBytes: the activation rows in it). */
export async function send(
  peer: CommPeer,
  counters: CommCounters,
  msg: CommMessage,
  payloadBytes: number,
): Promise<void> {
  counters.sent(msg.layer, msg.step, msg.bytes.byteLength, payloadBytes);
  await peer.deliver(msg);
}

// --- wire format: Int32 header (sizes and offsets), then f32 rows

/**
 * A2E part: header [numTokens, numPairs, mapVersion, pairs: (token, expert) x numPairs], then
 * numTokens rows of `hidden` f32. Tokens are those of the sender with at least one expert on the
 * destination rank, each sent once.
 */
export interface A2ePart {
  mapVersion: number;
  numTokens: number;
  /** (numPairs * 2): token index within this part, logical expert id. */
  pairs: Int32Array;
  rows: Float32Array;
}

export function encodeA2e(p: A2ePart, hidden: number): Uint8Array {
  const numPairs = p.pairs.length / 2;
  const headerInts = 3 + 2 * numPairs;
  const out = new Uint8Array(4 * (headerInts + p.numTokens * hidden));
  const ints = new Int32Array(out.buffer, 0, headerInts);
  ints[0] = p.numTokens;
  ints[1] = numPairs;
  ints[2] = p.mapVersion;
  ints.set(p.pairs, 3);
  new Float32Array(out.buffer, 4 * headerInts).set(p.rows.subarray(0, p.numTokens * hidden));
  return out;
}

export function decodeA2e(bytes: Uint8Array, hidden: number): A2ePart {
  const buf = aligned(bytes);
  const head = new Int32Array(buf.buffer, buf.byteOffset, 3);
  const numTokens = head[0] as number;
  const numPairs = head[1] as number;
  const headerInts = 3 + 2 * numPairs;
  if (buf.byteLength !== 4 * (headerInts + numTokens * hidden)) {
    throw new Error(`a2e part of ${buf.byteLength} bytes does not match its header`);
  }
  return {
    numTokens,
    mapVersion: head[2] as number,
    pairs: new Int32Array(buf.buffer, buf.byteOffset + 12, 2 * numPairs),
    rows: new Float32Array(buf.buffer, buf.byteOffset + 4 * headerInts, numTokens * hidden),
  };
}

/** E2A part: header [numPairs], then numPairs rows of f32, in the A2E part's pair order. */
export function encodeE2a(rows: Float32Array, numPairs: number, hidden: number): Uint8Array {
  const out = new Uint8Array(4 * (1 + numPairs * hidden));
  new Int32Array(out.buffer, 0, 1)[0] = numPairs;
  new Float32Array(out.buffer, 4).set(rows.subarray(0, numPairs * hidden));
  return out;
}

export function decodeE2a(bytes: Uint8Array, hidden: number): Float32Array {
  const buf = aligned(bytes);
  const numPairs = new Int32Array(buf.buffer, buf.byteOffset, 1)[0] as number;
  if (buf.byteLength !== 4 * (1 + numPairs * hidden)) {
    throw new Error(`e2a part of ${buf.byteLength} bytes does not match its header`);
  }
  return new Float32Array(buf.buffer, buf.byteOffset + 4, numPairs * hidden);
}

/** Typed-array views need 4-byte alignment: copy when an RPC handed an unaligned view. */
function aligned(b: Uint8Array): Uint8Array {
  return b.byteOffset % 4 === 0 ? b : b.slice();
}
