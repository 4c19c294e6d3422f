/**
 * Measures the serving path's fixed costs around the engine, the model card's
 * `requestOverheadMs`, `stepOverheadMs` and `tokenOverheadMs` (shared/sim/cost-model.ts), on the
 * direct server (test/helpers/direct-server.ts: the deploy bundle on one workerd, no wrangler
 * proxy) with the checkpoint `--model-file` (default models/synthetic-moe.gguf; uploaded unless it
 * is the server's own default model, bench/model-file.ts). Five kinds of streamed request
 * (bench/stream-request.ts), one-token prompts unless said, each `--rounds` times after a
 * warm-up, `--gap-ms` apart (default 100: the server warm; somewhere between 300 and 600 ms of
 * idle the path turns about twice as slow, which I measures on its own: at a gap near that edge
 * A and L each land on either side of it from round to round, and their difference, the prompt
 * tokens' cost, took up the cold penalty), medians:
 *
 *   A. max_tokens 1, one at a time:  TTFT = request + one 1-token prefill step
 *   B. max_tokens N, one at a time:  TPOT = a decode step of 1 sequence + finish / (N - 1)
 *   S. max_tokens 4, one at a time:  TPOT = a decode step of 1 sequence + finish / 3
 *   C. max_tokens N, K at once:      TPOT = a decode step of K sequences + finish / (N - 1)
 *   L. a 256-token prompt, max_tokens 1: TTFT = A + 255 prompt tokens' costs + the longer prefill
 *
 *   I. max_tokens 1 after each of `--idle-gaps` ms of idle server (in a seeded random order each
 *      round): A as a function of idle time
 *
 * (bench:serve's TPOT is (e2e - TTFT) / (tokens - 1), so the time from the last token to [DONE]
 * is spread over the tokens. Timing it directly, [DONE] minus the last token frame, gave ~0.01 ms
 * in most rounds at load 14: the last token frame reaches the client together with the usage
 * frame and [DONE], so the finish cost lies before it and only the difference of two lengths
 * isolates it.) The engine's share of each step comes from the card's fitted
 * coefficients (profile:steps), the rest is the path's: finish = (S - B) / (1/3 - 1/(N-1));
 * with s1 = B - finish/(N-1) and sK = C - finish/(N-1), s1 - engine(1) = step + token and
 * sK - engine(K) = step + K * token; promptToken = (L - A - (engine(prefill of 256) -
 * engine(prefill of 1))) / 255; request = A - (engine(prefill of 1) + step + token +
 * promptToken), and the same for each idle gap of I (`idleRequestOverheadMs`, the simulator's
 * request overhead after that much idle time: this machine runs the path about twice as slow
 * after ~0.5 s of idle as back to back); each held at 0 when it comes out negative. The spread of
 * A, L and I about their medians (each sample minus its kind's median, all kinds pooled, sorted)
 * is the card's `requestJitterMs`, which the simulator draws from per request. Prints one JSON object on its last line (with the load
 * average: the machine is shared); with `--write` also stores the seven fields in the card and
 * sets `pathSharesThread` (the direct server is one workerd).
 *
 *   npm run -s profile:path -- [--card PATH] [--model-file PATH] [--rounds N] [--tokens N]
 *     [--concurrency K] [--gap-ms MS] [--idle-gaps MS,MS,...] [--write]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_FILE, serveModelFile } from "../bench/model-file.ts";
import { readCard } from "../bench/sim-run.ts";
import { type Outcome, streamCompletion } from "../bench/stream-request.ts";
import { mulberry32 } from "../shared/random.ts";
import { stepTimeMs } from "../shared/sim/cost-model.ts";
import { ADMIN_KEY, LOCAL_KEY } from "../test/helpers/dev-server.ts";
import { startDirectServer } from "../test/helpers/direct-server.ts";

const { values } = parseArgs({
  options: {
    card: { type: "string", default: "bench/cards/synthetic-moe-cpu.json" },
    "model-file": { type: "string", default: DEFAULT_MODEL_FILE },
    rounds: { type: "string", default: "20" },
    tokens: { type: "string", default: "32" },
    concurrency: { type: "string", default: "4" },
    "gap-ms": { type: "string", default: "100" },
    "idle-gaps": { type: "string", default: "50,250,500,1000,2000" },
    write: { type: "boolean", default: false },
  },
});
const int = (name: string, v: string, min: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`profile:path: --${name} must be an integer >= ${min}, got ${v}`);
    process.exit(2);
  }
  return n;
};
const rounds = int("rounds", values.rounds, 3);
const tokens = int("tokens", values.tokens, 4);
const k = int("concurrency", values.concurrency, 2);
const gapMs = int("gap-ms", values["gap-ms"], 0);
const idleGaps = values["idle-gaps"].split(",").map((g) => int("idle-gaps", g, 0));
if (idleGaps.some((g, i) => i > 0 && g <= (idleGaps[i - 1] as number))) {
  console.error("profile:path: --idle-gaps must ascend");
  process.exit(2);
}
const idle = () => new Promise<void>((r) => setTimeout(r, gapMs));
const rng = mulberry32(11);
/** 0..n-1 in a seeded random order (Fisher-Yates). */
const shuffled = (n: number): number[] => {
  const xs = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const k = Math.floor(rng() * (i + 1));
    [xs[i], xs[k]] = [xs[k] as number, xs[i] as number];
  }
  return xs;
};
const card = readCard(values.card);
/** The check's prompt: its TTFT less the 1-token one should be the card's prefill difference. */
const LONG_PROMPT = 256;

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const r3 = (x: number) => Number(x.toFixed(3));
const load0 = loadavg()[0] as number;

const server = await startDirectServer();
try {
  const served = await serveModelFile(
    server.url,
    { apiKey: LOCAL_KEY, adminKey: ADMIN_KEY },
    values["model-file"],
  );
  const MODEL = served.model;
  let next = 3;
  const send = async (
    maxTokens: number,
    promptLen = 1,
    afterIdle = true,
  ): Promise<Extract<Outcome, { ok: true }>> => {
    // a fresh prompt each time (ids stay inside any vocabulary), so nothing is cached
    if (afterIdle) await idle();
    const first = next++;
    const prompt = Array.from({ length: promptLen }, (_, i) => 3 + ((first * 7 + i * 13) % 250));
    const o = await streamCompletion({
      baseUrl: server.url,
      apiKey: LOCAL_KEY,
      model: MODEL,
      prompt,
      maxTokens,
      signal: new AbortController().signal,
    });
    if (!o.ok) throw new Error(`request failed: ${o.reason} ${o.detail ?? ""}`);
    return o;
  };
  for (let i = 0; i < 3; i++) await send(4, 1, false);
  const ttft: number[] = [];
  const tpot1: number[] = [];
  const tpotK: number[] = [];
  const tpotShort: number[] = [];
  const ttftLong: number[] = [];
  const ttftIdle = idleGaps.map(() => [] as number[]);
  for (let i = 0; i < rounds; i++) {
    // in a fresh order each round, so that no gap always follows the same one
    for (const j of shuffled(idleGaps.length)) {
      const g = idleGaps[j] as number;
      await new Promise<void>((r) => setTimeout(r, g));
      (ttftIdle[j] as number[]).push((await send(1, 1, false)).ttftMs);
    }
    ttft.push((await send(1)).ttftMs);
    tpot1.push((await send(tokens)).tpotMs as number);
    tpotShort.push((await send(4)).tpotMs as number);
    ttftLong.push((await send(1, LONG_PROMPT)).ttftMs);
    await idle();
    const batch = await Promise.all(Array.from({ length: k }, () => send(tokens, 1, false)));
    for (const o of batch) tpotK.push(o.tpotMs as number);
  }
  // the card's engine time of a step (a decode at the run's mean position, or a 1-token prefill)
  const meanPos = 1 + tokens / 2;
  const engine = (attended: number, scheduled: number, seqs: number) =>
    stepTimeMs(card, {
      scheduledTokens: scheduled,
      attendedTokens: attended,
      decodeAttended: 0,
      numSeqs: seqs,
      numSampled: seqs,
    });
  const decode1 = engine(meanPos, 1, 1);
  const decodeK = engine(k * meanPos, k, k);
  const prefill1 = engine(1, 1, 1);
  const prefillLong = engine((LONG_PROMPT * (LONG_PROMPT + 1)) / 2, LONG_PROMPT, 1);
  const a = median(ttft);
  const b = median(tpot1);
  const c = median(tpotK);
  const short = median(tpotShort);
  const finish = Math.max(0, (short - b) / (1 / 3 - 1 / (tokens - 1)));
  const s1 = b - finish / (tokens - 1);
  const sK = c - finish / (tokens - 1);
  const token = Math.max(0, (sK - decodeK - (s1 - decode1)) / (k - 1));
  const step = Math.max(0, s1 - decode1 - token);
  const longA = median(ttftLong);
  const promptToken = Math.max(0, (longA - a - (prefillLong - prefill1)) / (LONG_PROMPT - 1));
  const pathOfA = prefill1 + step + token + promptToken;
  const request = Math.max(0, a - pathOfA);
  // the same request after each idle spell: the request overhead as a function of idle time
  const idleTable = idleGaps.map((g, j): [number, number] => [
    g,
    r3(Math.max(0, median(ttftIdle[j] as number[]) - pathOfA)),
  ]);
  // identical requests' spread about their median (GC, descheduling): the card's jitter
  const groups = [ttft, ttftLong, ...ttftIdle];
  const jitter = groups.flatMap((g) => g.map((x) => r3(x - median(g)))).sort((x, y) => x - y);
  const fields = {
    requestOverheadMs: r3(request),
    promptTokenOverheadMs: Number(promptToken.toPrecision(4)),
    finishOverheadMs: r3(finish),
    stepOverheadMs: r3(step),
    tokenOverheadMs: r3(token),
    idleRequestOverheadMs: idleTable,
    requestJitterMs: jitter,
  };
  if (values.write) {
    const raw = JSON.parse(readFileSync(values.card, "utf8")) as Record<string, unknown>;
    const src = `npm run -s profile:path (direct server, ${rounds} rounds ${gapMs} ms apart, medians, load ${load0.toFixed(1)})`;
    const source = String(raw.source ?? "").replace(/; serving path: .*$/, "");
    const out = {
      ...raw,
      ...fields,
      pathSharesThread: true,
      source: `${source}; serving path: ${src}`,
    };
    writeFileSync(values.card, `${JSON.stringify(out, null, 2)}\n`);
  }
  console.log(
    JSON.stringify({
      ...fields,
      ttft_1tok_ms: r3(a),
      tpot_batch1_ms: r3(b),
      tpot_batch1_4tok_ms: r3(short),
      [`tpot_batch${k}_ms`]: r3(c),
      [`ttft_${LONG_PROMPT}tok_ms`]: r3(longA),
      engine_ms: {
        [`prefill${LONG_PROMPT}`]: r3(prefillLong),
        prefill1: r3(prefill1),
        decode1: r3(decode1),
        [`decode${k}`]: r3(decodeK),
      },
      rounds,
      gap_ms: gapMs,
      tokens,
      concurrency: k,
      loadavg_1m: [r3(load0), r3(loadavg()[0] as number)],
      card: values.card,
      written: values.write,
    }),
  );
} finally {
  await server.stop();
}
