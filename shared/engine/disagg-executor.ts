/**
 * The attention side of moe-attention (xDeepServe's attention die): the Transformer runs
 * attention, the router and top-k here, and this MoeExecutor dispatches each MoE layer's rows to
 * the expert ranks holding their experts (A2E) and takes the outputs back (E2A) into the
 * per-(row, slot) buffer the Transformer combines in slot order. Every step sends a part to every
 * expert rank, an explicit empty one when no row goes there, so the experts' barrier never waits
 * on a rank with nothing to say; an idle step (`endStep` with no forward) sends empty parts for
 * every MoE layer. Each token goes once to each rank holding one of its experts. A step runs on
 * the expert map it started with. Pure apart from the peers and clock the host gives.
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
import { type ExpertMap, rankFor } from "./expert-map.ts";

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
    const k = o.topK;
    const map = this.currentMap();
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
    const rows = new Float32Array(b.numTokens * h);
    const sends = parts.map((p, j) => {
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
        from: o.rank,
        bytes,
      };
      return send(o.experts(j), this.counters, msg, p.tokens.length * h * 4);
    });
    const busy = parts.flatMap((p, j) => (p.pairs.length > 0 ? [j] : []));
    const replies = this.inbox.gather("e2a", this.step, b.layer, busy, o.timeoutMs);
    await Promise.all(sends);
    this.layersSent++;
    for (const m of await replies) {
      const p = parts[m.from] as RankPart;
      const out = decodeE2a(m.bytes, h);
      assert(out.length === p.slots.length * h, `e2a part from rank ${m.from} has the wrong size`);
      p.slots.forEach((slot, i) => {
        slotOut.set(out.subarray(i * h, (i + 1) * h), slot * h);
      });
    }
    this.computeFrom = o.clock.now();
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
      for (let j = 0; j < map.numRanks; j++) {
        const msg: CommMessage = {
          kind: "a2e",
          step: this.step,
          layer,
          from: this.o.rank,
          bytes: empty,
        };
        sends.push(send(this.o.experts(j), this.counters, msg, 0));
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
