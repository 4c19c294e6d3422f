/**
 * The Npu's part in scaling: the post-load warm-up (one greedy token through the engine loop, so
 * the first request pays no first-run costs), drain (resolves once no task runs or starts), and
 * the keep-alive (a pooled or bound Npu wakes on its alarm so its runtime and weights stay
 * resident).
 */
import type { Engine, SeqOutput } from "../shared/engine/engine.ts";
import type { SamplingParams } from "../shared/engine/sequence.ts";
import { failure, type Result } from "../shared/errors.ts";

/**
 * Keep-alive period of a pooled or bound Npu: under the 10 s after which workerd evicts an
 * inactive object locally (workerd PR 1138), and production lets one hibernate, which drops its
 * runtime and weights. An alarm is an event, so it keeps the object in memory.
 */
export const KEEP_ALIVE_MS = 5_000;

const WARMUP_PARAMS: SamplingParams = {
  temperature: 0,
  topP: 1,
  topK: 0,
  seed: 0,
  logprobs: false,
  numTopLogprobs: 0,
  maxTokens: 1,
  stop: [],
  ignoreEos: true,
};

export class NpuLifecycle {
  #numWarmups = 0;
  readonly #warmups = new Map<string, () => void>();
  #waiters: (() => void)[] = [];
  /** The Npu is draining: the ClusterManager no longer places tasks on it. */
  draining = false;
  /** The Npu sits in the pool (runtime up, no model): its alarm keeps it resident. */
  pooled = false;
  lastActiveAt = Date.now();

  /**
   * Runs one greedy token from the first token id through the engine loop (`kick` starts it) and
   * resolves when it is out. An engine that cannot take it is an error value.
   */
  warmUp(engine: Engine, kick: () => void): Promise<Result<{ warmupMs: number }>> {
    const t0 = Date.now();
    const seqId = `warmup/${this.#numWarmups++}`;
    const err = engine.add(seqId, [0], WARMUP_PARAMS);
    if (err) return Promise.resolve(failure(err));
    const done = new Promise<Result<{ warmupMs: number }>>((resolve) => {
      this.#warmups.set(seqId, () => resolve({ ok: true, value: { warmupMs: Date.now() - t0 } }));
    });
    kick();
    return done;
  }

  /** True when `o` belonged to a warm-up (it is consumed here). */
  onOutput(o: SeqOutput): boolean {
    const done = this.#warmups.get(o.seqId);
    if (!done) return false;
    if (o.finished) {
      this.#warmups.delete(o.seqId);
      done();
    }
    return true;
  }

  /** The engine failed: warm-ups end (the load is then reported as failed by the caller). */
  failAll(): void {
    for (const done of this.#warmups.values()) done();
    this.#warmups.clear();
  }

  /** Something ended; drains re-check. */
  changed(): void {
    this.lastActiveAt = Date.now();
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `busy()` is false, re-checked after every ended task. */
  async drain(busy: () => boolean): Promise<void> {
    this.draining = true;
    while (busy()) await new Promise<void>((r) => this.#waiters.push(r));
  }

  /** When the keep-alive alarm is due, or null when this Npu is neither pooled nor `bound`. */
  nextKeepAlive(now: number, bound: boolean): number | null {
    return this.pooled || bound ? now + KEEP_ALIVE_MS : null;
  }
}
