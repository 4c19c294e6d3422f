/**
 * The simulator's step-time model: one engine step of an instance takes
 *
 *   t_ms = a + b * scheduledTokens + c * attendedTokens + e * decodeAttended + d * numSeqs
 *
 * where scheduledTokens are the tokens computed this step (prefill chunks plus one per decode),
 * attendedTokens the (query, key) pairs of causal attention over the KV cache of the sequences
 * that compute more than one token (a chunk of n tokens at position p attends to
 * n * p + n * (n + 1) / 2 positions), decodeAttended the positions read by sequences that compute
 * one token (a decode at position p reads p + 1), and numSeqs the sequences in the step. On an
 * accelerator a decode's attention is bound by reading its KV from memory, a prefill's by
 * compute, hence two coefficients; a card without `e` uses `c` for both (the CPU card is fitted
 * that way). A "model card" carries the coefficients with the instance shape they hold for
 * (context, KV capacity, batching limits) and, optionally, SLOs suited to its speed.
 *
 * The serving path around the engine has fixed costs of its own, optional card fields (0 when
 * absent) that the simulator applies where they occur:
 *   - requestOverheadMs, once per request before its first step: admission, tokenising,
 *     placement, the RPCs to the instance; a request reaches its instance's scheduler that long
 *     after it arrives, so it adds to TTFT and e2e, not to TPOT; with `idleRequestOverheadMs`
 *     (pairs of [ms the server sat idle before the request, request overhead], ascending) and
 *     `pathSharesThread`, it is read off that table instead, linearly between its points and
 *     flat beyond its ends, at the time since the thread last did any work (0 while an instance
 *     is busy): a server woken after an idle spell runs the path slower than a busy one; with
 *     `requestJitterMs` (how far identical requests' path times fell from their median, measured)
 *     each request on the shared thread also gets one of those deviations, drawn at random
 *     (seeded, per request): a real process's garbage collections and descheduling, which no
 *     fixed cost has;
 *   - promptTokenOverheadMs, per prompt token, with requestOverheadMs: what a longer prompt costs
 *     the server beyond the engine's fitted prefill time (the body's ids, block keys, and the
 *     engine running slower in workerd than in the Node fit);
 *   - firstTokenOverheadMs, once per request after the step that sampled its first token, when
 *     more are to come: the task's first progress report (running, first token) to the
 *     JobExecutor and the response's first write; the instance's next step starts that much later
 *     (on a shared thread, every instance's), so it adds to the TPOT and e2e of the sequences in
 *     that instance's batch, not to the request's TTFT;
 *   - finishOverheadMs, once per request after its last step: ending the task (the finished
 *     report, the usage frame, [DONE]); the request ends that long after its last step, so it
 *     adds to e2e and TPOT (bench:serve's TPOT is (e2e - TTFT) / (tokens - 1));
 *   - stepOverheadMs, once per step: the instance loop's turn between steps (yield, task
 *     reports, outbox);
 *   - tokenOverheadMs, per token sampled in a step: framing and streaming it as SSE.
 * `servedStepMs` is a step's engine time plus the last two. With `pathSharesThread` (a local
 * server: one workerd runs the worker, the Durable Objects and the engine on one thread) the
 * per-request costs are also work on the engine's thread, and every instance's steps run on it
 * too: a step starts when the thread is through with the steps and path work before it (the
 * instances take turns, as the Npus' loops do in one workerd). Deployed, the request path and
 * each instance run elsewhere: false. Pure.
 */
import { attendedPairs, type StepPlan } from "../engine/executor.ts";

export interface ModelCard {
  name: string;
  /** Where the figures come from (a measurement command, a datasheet estimate). */
  source: string;
  /** The GGUF file a measured card was measured on (its file name), to pair it with a run. */
  checkpoint?: string;
  /** Step time coefficients in ms: fixed, per scheduled token, per attended pair, per sequence. */
  a: number;
  b: number;
  c: number;
  d: number;
  /** ms per KV position read by a one-token (decode) sequence; `c` when absent. */
  e?: number;
  /** PD handoffs: KV bytes per prompt token, fabric throughput (1e9 bytes/s), fixed latency. */
  kvBytesPerToken?: number;
  fabricGBps?: number;
  fabricLatencyMs?: number;
  /** Default SLOs for runs with this card (the CLI's defaults when absent). */
  sloTtftMs?: number;
  sloTpotMs?: number;
  /** Serving-path costs in ms, 0 when absent: per request (before, after), step, sampled token. */
  requestOverheadMs?: number;
  promptTokenOverheadMs?: number;
  finishOverheadMs?: number;
  /** After the step of a request's first token, when it has more to come (not its TTFT). */
  firstTokenOverheadMs?: number;
  stepOverheadMs?: number;
  tokenOverheadMs?: number;
  /** [idle ms before the request, requestOverheadMs at that idle time], idle ascending. */
  idleRequestOverheadMs?: [number, number][];
  /** Measured deviations (ms) of identical requests' path times from their median, ascending. */
  requestJitterMs?: number[];
  /** One thread runs the path and every instance's steps (a local server): they take turns. */
  pathSharesThread?: boolean;
  /** The instance shape: context, KV cache in tokens, KV block size, batching limits. */
  maxModelLen: number;
  kvCapacityTokens: number;
  blockSize: number;
  maxNumSeqs: number;
  maxNumBatchedTokens: number;
}

/** The card fields of the serving path's costs (profile:path measures them). */
export const PATH_FIELDS = [
  "requestOverheadMs",
  "promptTokenOverheadMs",
  "finishOverheadMs",
  "firstTokenOverheadMs",
  "stepOverheadMs",
  "tokenOverheadMs",
] as const;

export interface StepFeatures {
  scheduledTokens: number;
  /** Attention pairs of the sequences computing more than one token. */
  attendedTokens: number;
  /** KV positions read by the sequences computing one token. */
  decodeAttended: number;
  numSeqs: number;
  /** Sequences that sample a token this step (a decode, or a prefill's last chunk). */
  numSampled: number;
}

export function stepFeatures(plan: StepPlan): StepFeatures {
  let attendedTokens = 0;
  let decodeAttended = 0;
  let numSampled = 0;
  for (const s of plan.seqs) {
    if (s.sample) numSampled++;
    const pairs = attendedPairs(s.startPos, s.tokenIds.length);
    if (s.tokenIds.length === 1) decodeAttended += pairs;
    else attendedTokens += pairs;
  }
  return {
    scheduledTokens: plan.numScheduledTokens,
    attendedTokens,
    decodeAttended,
    numSeqs: plan.seqs.length,
    numSampled,
  };
}

export function stepTimeMs(card: ModelCard, f: StepFeatures): number {
  return (
    card.a +
    card.b * f.scheduledTokens +
    card.c * f.attendedTokens +
    (card.e ?? card.c) * f.decodeAttended +
    card.d * f.numSeqs
  );
}

/**
 * ms from a request's arrival to its reaching the instance's scheduler; `idleMs`, the time the
 * server's thread sat idle before it, selects the request overhead from `idleRequestOverheadMs`
 * when the card has that table and `pathSharesThread` (otherwise `requestOverheadMs` holds);
 * `u` in [0, 1) picks the request's deviation from `requestJitterMs` (none without the table or
 * `u`). Never negative.
 */
export function admissionMs(
  card: ModelCard,
  numPromptTokens: number,
  idleMs = 0,
  u: number | null = null,
): number {
  const j = card.requestJitterMs;
  const jitter =
    u === null || j === undefined || j.length === 0 ? 0 : (j[Math.floor(u * j.length)] as number);
  const ms =
    requestOverheadMs(card, idleMs) + (card.promptTokenOverheadMs ?? 0) * numPromptTokens + jitter;
  return Math.max(0, ms);
}

function requestOverheadMs(card: ModelCard, idleMs: number): number {
  const t = card.idleRequestOverheadMs;
  if (!card.pathSharesThread || t === undefined || t.length === 0) {
    return card.requestOverheadMs ?? 0;
  }
  const first = t[0] as [number, number];
  if (idleMs <= first[0]) return first[1];
  for (let i = 1; i < t.length; i++) {
    const [x1, y1] = t[i] as [number, number];
    if (idleMs <= x1) {
      const [x0, y0] = t[i - 1] as [number, number];
      return y0 + ((y1 - y0) * (idleMs - x0)) / (x1 - x0);
    }
  }
  return (t[t.length - 1] as [number, number])[1];
}

/** A step as the serving path sees it: engine time, the step's overhead, each sampled token's. */
export function servedStepMs(card: ModelCard, f: StepFeatures): number {
  return (
    stepTimeMs(card, f) + (card.stepOverheadMs ?? 0) + (card.tokenOverheadMs ?? 0) * f.numSampled
  );
}

/** Returns the first problem with a card (a missing or negative figure), or null. */
export function checkModelCard(x: unknown): string | null {
  if (typeof x !== "object" || x === null) return "a model card is a JSON object";
  const o = x as Record<string, unknown>;
  if (typeof o.name !== "string") return "name must be a string";
  for (const k of ["a", "b", "c", "d"]) {
    const v = o[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) return `${k} must be a number >= 0`;
  }
  for (const k of [
    "maxModelLen",
    "kvCapacityTokens",
    "blockSize",
    "maxNumSeqs",
    "maxNumBatchedTokens",
  ]) {
    const v = o[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
      return `${k} must be an integer >= 1`;
  }
  for (const k of [
    "e",
    "sloTtftMs",
    "sloTpotMs",
    "kvBytesPerToken",
    "fabricGBps",
    "fabricLatencyMs",
    ...PATH_FIELDS,
  ]) {
    const v = o[k];
    if (v !== undefined && (typeof v !== "number" || !Number.isFinite(v) || v < 0)) {
      return `${k} must be a number >= 0 when given`;
    }
  }
  const idle = o.idleRequestOverheadMs;
  if (idle !== undefined) {
    const ok =
      Array.isArray(idle) &&
      idle.every(
        (p, i) =>
          Array.isArray(p) &&
          p.length === 2 &&
          p.every((v) => typeof v === "number" && Number.isFinite(v) && v >= 0) &&
          (i === 0 || (p[0] as number) > ((idle[i - 1] as number[])[0] as number)),
      );
    if (!ok) return "idleRequestOverheadMs must be [idle ms, ms] pairs >= 0, idle ascending";
  }
  const jitter = o.requestJitterMs;
  if (
    jitter !== undefined &&
    !(
      Array.isArray(jitter) &&
      jitter.every(
        (v, i) =>
          typeof v === "number" &&
          Number.isFinite(v) &&
          (i === 0 || v >= (jitter[i - 1] as number)),
      )
    )
  ) {
    return "requestJitterMs must be ascending numbers when given";
  }
  if (o.pathSharesThread !== undefined && typeof o.pathSharesThread !== "boolean") {
    return "pathSharesThread must be a boolean when given";
  }
  if ((o.a as number) + (o.b as number) + (o.d as number) <= 0) {
    return "a step must take time: a, b or d must be > 0";
  }
  return null;
}
