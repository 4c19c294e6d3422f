/**
 * Per-token cost of the pure-compute hops of a streamed token, timed in this Node process on the
 * same code the server runs (workerd's clock does not advance during compute, so server-side
 * timestamps cannot time these):
 *
 * - engine: `createInstance` with the wasm kernels and the serving defaults (the Npu's memory
 *   budget, MAX_NUM_SEQS, MAX_NUM_BATCHED_TOKENS, KV_BLOCK_SIZE), one greedy sequence;
 * - events: what carries an engine output from the Npu to the worker, without the transport:
 *   `TaskTracker.onOutput` and `encodeEvent` (Npu side), `decodeEvents` (worker side);
 * - SSE framing: the worker's `sseResponseStream` turning those events into `data:` frames.
 */
import { loadNodeInstance } from "../hosts/node-engine.ts";
import { parseServingConfig } from "../shared/config.ts";
import type { SeqOutput } from "../shared/engine/engine.ts";
import { GREEDY } from "../shared/engine/sequence.ts";
import { decodeEvents, encodeEvent } from "../shared/protocol/codec.ts";
import type { GenerateEvent } from "../shared/protocol/messages.ts";
import { TaskTracker } from "../shared/serving/task.ts";
import type { Tokenizer } from "../shared/tokenizer/tokenizer.ts";
import { sseResponseStream } from "../workers/openai/format.ts";

export interface HopCosts {
  /** Engine time of a whole generation (prompt step + decode steps) / tokens, median of runs. */
  engineMsPerToken: number;
  /** Median engine step after the first (one decode step of one sequence). */
  engineDecodeStepMs: number;
  eventsMsPerToken: number;
  sseMsPerToken: number;
  engineRuns: number;
  /** Streams of `tokens` tokens per timed sample of the event and SSE hops. */
  framingStreamsPerSample: number;
  framingSamples: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

export async function measureHops(
  bytes: Uint8Array,
  prompt: string,
  tokens: number,
  engineRuns: number,
): Promise<HopCosts> {
  const cfg = parseServingConfig({});
  const inst = await loadNodeInstance(bytes, {
    kernels: "wasm",
    capacityBytes: cfg.npuMemoryBudgetBytes,
    maxNumSeqs: cfg.maxNumSeqs,
    maxNumBatchedTokens: cfg.maxNumBatchedTokens,
    blockSize: cfg.blockSize,
  });
  const promptIds = inst.tokenizer.encode(prompt);

  // Engine: one discarded run warms the JIT; the first timed run's outputs feed the framing hops.
  const perToken: number[] = [];
  const decodeSteps: number[] = [];
  let outputs: SeqOutput[] = [];
  for (let r = 0; r <= engineRuns; r++) {
    const seqId = `hop_${r}`;
    const err = inst.engine.add(seqId, promptIds, {
      ...GREEDY,
      maxTokens: tokens,
      ignoreEos: true,
    });
    if (err) throw new Error(err.message);
    const seqOutputs: SeqOutput[] = [];
    const stepMs: number[] = [];
    while (inst.engine.hasWork()) {
      const t0 = performance.now();
      const report = await inst.engine.step();
      stepMs.push(performance.now() - t0);
      seqOutputs.push(...report.outputs.filter((o) => o.seqId === seqId));
    }
    const generated = seqOutputs.reduce((n, o) => n + o.newTokenIds.length, 0);
    if (generated !== tokens)
      throw new Error(`engine: expected ${tokens} tokens, got ${generated}`);
    if (r === 0) continue;
    if (outputs.length === 0) outputs = seqOutputs;
    perToken.push(stepMs.reduce((a, b) => a + b, 0) / tokens);
    decodeSteps.push(...stepMs.slice(1));
  }

  const numPrompt = promptIds.length;
  const events = eventsOf(outputs, numPrompt, inst.tokenizer);
  const streams = 200;
  const samples = 7;
  const eventsMs = await timeSamples(samples, streams, () =>
    drainEvents(outputs, numPrompt, inst.tokenizer),
  );
  const sseMs = await timeSamples(samples, streams, () => drainSse(events));
  return {
    engineMsPerToken: median(perToken),
    engineDecodeStepMs: median(decodeSteps),
    eventsMsPerToken: eventsMs / tokens,
    sseMsPerToken: sseMs / tokens,
    engineRuns,
    framingStreamsPerSample: streams,
    framingSamples: samples,
  };
}

/** Median over `samples` (after one discarded warm-up sample) of ms per call of `fn`. */
async function timeSamples(
  samples: number,
  calls: number,
  fn: () => Promise<void>,
): Promise<number> {
  const out: number[] = [];
  for (let s = 0; s <= samples; s++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await fn();
    if (s > 0) out.push((performance.now() - t0) / calls);
  }
  return median(out);
}

/** The events the Npu emits for these outputs of one single-choice completion. */
function eventsOf(outputs: SeqOutput[], numPrompt: number, tokenizer: Tokenizer): GenerateEvent[] {
  const tracker = new TaskTracker(1, numPrompt, tokenizer);
  return outputs.flatMap((o) => tracker.onOutput(0, o, 0));
}

/** Npu side (tracker, NDJSON encode, one enqueue per event) to worker side (NDJSON decode). */
async function drainEvents(
  outputs: SeqOutput[],
  numPrompt: number,
  tokenizer: Tokenizer,
): Promise<void> {
  const tracker = new TaskTracker(1, numPrompt, tokenizer);
  let i = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      const o = outputs[i++];
      if (!o) return controller.close();
      for (const ev of tracker.onOutput(0, o, 0)) controller.enqueue(encodeEvent(ev));
    },
  });
  for await (const _ of decodeEvents(stream.getReader())) {
    // drained
  }
}

/** The worker's SSE framing of a completion stream with usage, read to its end. */
async function drainSse(events: GenerateEvent[]): Promise<void> {
  async function* source() {
    for (const e of events) yield [e]; // one event per chunk, as at one stream
  }
  const body = sseResponseStream(source(), {
    id: "cmpl-bench",
    created: 0,
    model: "bench",
    kind: "completion",
    numChoices: 1,
    includeUsage: true,
  });
  const reader = body.getReader();
  for (;;) {
    const { done } = await reader.read();
    if (done) break;
  }
}
