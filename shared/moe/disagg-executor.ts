/**
 * The attention side of moe-attention (xDeepServe's attention die): the Transformer runs
 * attention, the router and top-k here, and this MoeExecutor dispatches each MoE layer's rows to
 * the expert ranks holding their experts (A2E) and takes the outputs back (E2A) into the
 * per-(row, slot) buffer the Transformer combines in slot order. Every step sends a part to every
 * expert rank, an explicit empty one when no row goes there, so the experts' barrier never waits
 * on a rank with nothing to say; an idle step (`endStep` with no forward) sends empty parts for
 * every MoE layer. Each token goes once to each rank holding one of its experts. A step runs on
 * the expert map it started with, unless an expert rank fails over during it (`failover`): then
 * an exchange still waiting on the failed rank is replayed under the new map (one-step replay of
 * the (layer, step) dispatch: this rank's parts again, as attempt n + 1, which expert ranks serve
 * at once), and the rest of the step runs on the new map. A send a peer refuses (a reset rank)
 * is reported, not thrown: the failover watch decides about the rank. Pure apart from the peers
 * and clock the host gives.
 */
import { assert } from "../assert.ts";
import {
  type CommClock,
  CommCounters,
  type CommMessage,
  type CommPeer,
  decodeE2a,
  encodeA2e,
  Inbox,
  send,
} from "../fabric/comm.ts";
import type { MoeBatch, MoeExecutor } from "../model/moe-split.ts";
import { type ExpertMap, liveRanks, rankFor } from "./expert-map.ts";

export interface DisaggMoeOptions {
  /** This attention rank's index. */
  rank: number;
  hiddenSize: number;
  topK: number;
  /** Indices of the MoE layers (those with a router). */
  moeLayers: readonly number[];
  experts: (rank: number) => CommPeer;
  /** The current expert map (read once at the start of each step). */
  map: () => ExpertMap;
  clock: CommClock;
  timeoutMs: number;
  /** A send to expert rank `rank` failed (the exchange waits for the failover watch). */
  onPeerError?: (rank: number, error: unknown) => void;
  /** Ping-pong micro-batch m of M (ping-pong.ts): steps m, m + M, ...; counters shared. */
  microBatch?: { index: number; count: number; counters: CommCounters };
}

interface RankPart {
  /** Batch rows sent (each once). */
  tokens: number[];
  /** (token index in part, expert) per pair. */
  pairs: number[];
  /** row * topK + slot of each pair, for the combine. */
  slots: number[];
}

export class DisaggMoe implements MoeExecutor {
  readonly counters: CommCounters;
  readonly inbox: Inbox;
  /** The exchange step this rank is in (advanced by endStep; per micro-batch with ping-pong). */
  step: number;
  private stepMap: ExpertMap | null = null;
  private layersSent = 0;
  /** When this rank's compute for the next layer began (step start, or the last exchange's end). */
  private computeFrom: number | null = null;
  /** Resolved (and replaced) when the map changes under a running step, or the group fails. */
  private changed = signal();
  /** Set when an expert rank failed and could not be failed over: every exchange throws it. */
  private failure: Error | null = null;
  /** (layer, step) exchanges replayed after a failover. */
  numReplays = 0;

  constructor(private readonly o: DisaggMoeOptions) {
    this.counters = o.microBatch?.counters ?? new CommCounters();
    this.step = o.microBatch?.index ?? 0;
    this.inbox = new Inbox(o.clock, this.counters);
  }

  /** The map version the current step runs on, once it has started. */
  get mapVersion(): number | null {
    return this.stepMap?.version ?? null;
  }

  /** An E2A part from an expert rank. */
  deliver(msg: CommMessage): void {
    if (msg.kind !== "e2a") throw new Error(`attention rank got a ${msg.kind} message`);
    this.inbox.deliver(msg);
  }

  /** Marks the start of this rank's step (its compute before the first dispatch counts from here). */
  beginStep(): void {
    this.computeFrom = this.o.clock.now();
  }

  async experts(b: MoeBatch, slotOut: Float32Array): Promise<void> {
    const o = this.o;
    if (this.computeFrom !== null) {
      this.counters.computed(b.layer, this.step, o.clock.now() - this.computeFrom);
    }
    const h = o.hiddenSize;
    for (let attempt = 0; ; attempt++) {
      if (this.failure) throw this.failure;
      const map = this.currentMap();
      const changed = this.changed.promise;
      const parts = this.route(b, map);
      const rows = new Float32Array(b.numTokens * h);
      // a step's exchange sends every live rank a part (its barrier counts them); a replay only
      // the ranks that get pairs (they serve it alone)
      const to = liveRanks(map).filter((j) => attempt === 0 || (parts[j] as RankPart).pairs.length);
      const sends = to.map((j) => {
        const p = parts[j] as RankPart;
        p.tokens.forEach((r, i) => {
          rows.set(b.hidden.subarray(r * h, (r + 1) * h), i * h);
        });
        const bytes = encodeA2e(
          {
            mapVersion: map.version,
            numTokens: p.tokens.length,
            pairs: Int32Array.from(p.pairs),
            rows,
          },
          h,
        );
        const msg: CommMessage = {
          kind: "a2e",
          step: this.step,
          layer: b.layer,
          attempt,
          from: o.rank,
          bytes,
        };
        return this.sendTo(j, msg, p.tokens.length * h * 4);
      });
      const busy = parts.flatMap((p, j) => (p.pairs.length > 0 ? [j] : []));
      const replies = this.inbox.gather("e2a", this.step, b.layer, busy, o.timeoutMs, attempt);
      const done = Promise.all(sends).then(() => replies);
      if (attempt === 0) this.layersSent++;
      let got: CommMessage[] | null = null;
      let wake = changed;
      for (;;) {
        got = await Promise.race([done, wake.then(() => null)]);
        if (got) break;
        wake = this.changed.promise;
        const next = this.currentMap();
        // a failover: replay when a rank this exchange waits on went down
        if (this.failure || busy.some((j) => next.down?.includes(j))) break;
      }
      if (!got) {
        this.inbox.abandon("e2a", this.step, b.layer, attempt);
        if (this.failure) throw this.failure;
        this.numReplays++;
        continue;
      }
      for (const m of got) {
        const p = parts[m.from] as RankPart;
        const out = decodeE2a(m.bytes, h);
        assert(
          out.length === p.slots.length * h,
          `e2a part from rank ${m.from} has the wrong size`,
        );
        p.slots.forEach((slot, i) => {
          slotOut.set(out.subarray(i * h, (i + 1) * h), slot * h);
        });
      }
      this.computeFrom = o.clock.now();
      return;
    }
  }

  /** The part of each expert rank under `map`: its tokens (each once), pairs and slots. */
  private route(b: MoeBatch, map: ExpertMap): RankPart[] {
    const o = this.o;
    const k = o.topK;
    const parts: RankPart[] = Array.from({ length: map.numRanks }, () => ({
      tokens: [],
      pairs: [],
      slots: [],
    }));
    const seen = new Map<number, number>(); // expert -> tokens routed to it so far
    for (let r = 0; r < b.numTokens; r++) {
      for (let s = 0; s < k; s++) {
        const e = b.routeIds[r * k + s] as number;
        const n = seen.get(e) ?? 0;
        seen.set(e, n + 1);
        const p = parts[rankFor(map, b.layer, e, n + o.rank)] as RankPart;
        if (p.tokens[p.tokens.length - 1] !== r) p.tokens.push(r);
        p.pairs.push(p.tokens.length - 1, e);
        p.slots.push(r * k + s);
      }
    }
    return parts;
  }

  /** Sends to expert rank j; a refused send is reported to the host, not thrown. */
  private async sendTo(j: number, msg: CommMessage, payloadBytes: number): Promise<void> {
    try {
      await send(this.o.experts(j), this.counters, msg, payloadBytes);
    } catch (e) {
      this.o.onPeerError?.(j, e);
    }
  }

  /**
   * An expert rank failed over: `map` (without it) is used from now on, by the running step too;
   * an exchange waiting on a rank that went down replays under it.
   */
  failover(map: ExpertMap): void {
    if (this.stepMap) this.stepMap = map;
    this.wake();
  }

  /** An expert rank failed and could not be failed over: every exchange throws `error`. */
  fail(error: Error): void {
    this.failure = error;
    this.wake();
  }

  private wake(): void {
    const s = this.changed;
    this.changed = signal();
    s.resolve();
  }

  /**
   * Ends this rank's part of the group step: when no forward ran (an idle rank, or a step with
   * no tokens) it sends an empty part for every MoE layer to every expert rank. Then advances.
   */
  async endStep(): Promise<void> {
    if (this.layersSent === 0) await this.idle();
    assert(
      this.layersSent === this.o.moeLayers.length,
      `step ${this.step} dispatched ${this.layersSent} of ${this.o.moeLayers.length} MoE layers`,
    );
    this.abortStep();
  }

  /**
   * Sends an empty part for every MoE layer to every expert rank: this step runs no forward here
   * (endStep does it then; a ping-pong half with no sequences does it at once, ping-pong.ts).
   */
  async idle(): Promise<void> {
    assert(this.layersSent === 0, `step ${this.step} already dispatched`);
    const map = this.currentMap();
    const empty = encodeA2e(
      {
        mapVersion: map.version,
        numTokens: 0,
        pairs: new Int32Array(0),
        rows: new Float32Array(0),
      },
      this.o.hiddenSize,
    );
    const sends: Promise<void>[] = [];
    for (const layer of this.o.moeLayers) {
      for (const j of liveRanks(map)) {
        const msg: CommMessage = {
          kind: "a2e",
          step: this.step,
          layer,
          from: this.o.rank,
          bytes: empty,
        };
        sends.push(this.sendTo(j, msg, 0));
      }
    }
    this.layersSent = this.o.moeLayers.length;
    await Promise.all(sends);
  }

  /** Leaves a failed step (a timed-out exchange): the next step starts clean. */
  abortStep(): void {
    this.computeFrom = null;
    this.step += this.o.microBatch?.count ?? 1;
    this.stepMap = null;
    this.layersSent = 0;
  }

  private currentMap(): ExpertMap {
    this.stepMap ??= this.o.map();
    return this.stepMap;
  }
}

function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}
