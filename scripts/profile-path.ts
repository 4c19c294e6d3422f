/**
 * Measures the serving path's fixed costs around the engine, the model card's path fields
 * (shared/sim/cost-model.ts), on the direct server (test/helpers/direct-server.ts: the deploy
 * bundle on one workerd, no wrangler proxy) with the checkpoint `--model-file` (default
 * models/synthetic-moe.gguf; uploaded unless it is the server's own default model,
 * bench/model-file.ts). Streamed requests (bench/stream-request.ts), one-token prompts unless
 * said, fresh ids each (nothing cached), each kind once a round (D and O three times) for
 * `--rounds` rounds after a warm-up, `--gap-ms` apart (default 100: the server warm):
 *
 *   D. max_tokens n for each n of 2, 4, 8, ... up to `--tokens` (a seeded random order per
 *      round): e2e - TTFT = first + (n - 1) x a decode step of 1 sequence + finish
 *   O. max_tokens 1: e2e - TTFT = finish
 *   P. max_tokens 2, `--probes` of them: TTFT = request + a 1-token prefill step
 *   L. a 256-token prompt, max_tokens 2: TTFT = P + 255 prompt tokens' costs + the longer prefill
 *   C. max_tokens `--tokens`, K at once: TPOT = a decode step of K sequences + (first + finish)
 *      / (N - 1)
 *   I. max_tokens 2 after each of `--idle-gaps` ms of idle server (in a seeded random order each
 *      round): P as a function of idle time
 *
 * `first` (`firstTokenOverheadMs`) and `finish` (`finishOverheadMs`) are the path's work once per
 * request between its first frame and its last: after the step of its first token the Npu reports
 * the task running with its first token to the JobExecutor (durable-objects/task-streams.ts), on
 * the same thread, before the next step; after its last step it ends the task (the finished
 * report, usage, [DONE]). A request whose first token is its last reports once, so its first frame
 * is followed by the finish alone (O; timing every frame of the direct server's streams at load
 * ~1.5: ~5.5 ms to the first token whatever max_tokens, then +2.7 ms to the second against
 * 0.1-0.4 ms between later ones, and ~1.1 ms from the last token frame to [DONE], including a
 * decode step). TTFT is measured on requests of 2 or more tokens, as a trace's requests are.
 * `finish` is O's median; `first + finish` and the decode step are the intercept and the slope of
 * a least-squares line through D's medians of e2e - TTFT against n - 1 (one median per n over the
 * rounds). The engine's share of each figure comes from the card's fitted coefficients
 * (profile:steps), the rest is the path's: with s1 the slope and sK = C - (first + finish) / (N -
 * 1), s1 - engine(1) = step + token and sK - engine(K) = step + K x token, token held to [0, s1 -
 * engine(1)] (C's requests reach the instance one admission apart and decode in lockstep for part
 * of their tokens only, so C splits s1 but does not override it); promptToken = (L - P -
 * (engine(prefill of 256) - engine(prefill of 1))) / 255; request = P - (engine(prefill of 1) +
 * step + token + promptToken), and the same for each idle gap of I (`idleRequestOverheadMs`; on
 * a busy machine the path runs about twice as slow after ~0.5 s of idle as back to back); each
 * held at 0 when it comes out negative; medians over the rounds. The spread of identical
 * requests' TTFTs about their kind's median (P, L, each n of D and each gap of I; all pooled,
 * sorted) is the card's `requestJitterMs`, which the simulator draws from per request; P's
 * probes give it many samples cheaply. Prints one JSON object on its last line (with the load
 * average: the machine is shared); with `--write` also stores the eight fields in the card and
 * sets `pathSharesThread` (the direct server is one workerd).
 *
 *   npm run -s profile:path -- [--card PATH] [--model-file PATH] [--rounds N] [--tokens N]
 *     [--probes N] [--concurrency K] [--gap-ms MS] [--idle-gaps MS,MS,...] [--write]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_FILE, serveModelFile } from "../bench/model-file.ts";
import { readCard } from "../bench/sim-run.ts";
import { type Outcome, streamCompletion } from "../bench/stream-request.ts";
import { mulberry32 } from "../shared/random.ts";
import { stepTimeMs } from "../shared/sim/cost-model.ts";
import { median } from "../shared/sim/report.ts";
import { ADMIN_KEY, LOCAL_KEY } from "../test/helpers/dev-server.ts";
import { startDirectServer } from "../test/helpers/direct-server.ts";

const { values } = parseArgs({
  options: {
    card: { type: "string", default: "bench/cards/synthetic-moe-cpu.json" },
    "model-file": { type: "string", default: DEFAULT_MODEL_FILE },
    rounds: { type: "string", default: "20" },
    tokens: { type: "string", default: "32" },
    probes: { type: "string", default: "8" },
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
const probes = int("probes", values.probes, 1);
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
/** D and O per round: cheap (~1 s), and the line's intercept is the noisiest figure. */
const DECODE_PASSES = 3;
/** The check's prompt: its TTFT less the 1-token one should be the card's prefill difference. */
const LONG_PROMPT = 256;

const r3 = (x: number) => Number(x.toFixed(3));
/** Ordinary least squares y = intercept + slope x, and its R². */
const lineFit = (xs: number[], ys: number[]) => {
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = (xs[i] as number) - mx;
    const dy = (ys[i] as number) - my;
    sxy += dx * dy;
    sxx += dx * dx;
    syy += dy * dy;
  }
  const slope = sxy / sxx;
  const intercept = my - slope * mx;
  return { slope, intercept, r2: syy > 0 ? (sxy * sxy) / (sxx * syy) : 1 };
};
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
  // D's lengths: 2, 4, 8, ... and --tokens itself
  const lengths: number[] = [];
  for (let n = 2; n < tokens; n *= 2) lengths.push(n);
  lengths.push(tokens);
  const decodeGaps = lengths.map(() => [] as number[]);
  const ttftDecode = lengths.map(() => [] as number[]);
  const ttftProbe: number[] = [];
  const finishOne: number[] = [];
  const ttftLong: number[] = [];
  const tpotK: number[] = [];
  const ttftIdle = idleGaps.map(() => [] as number[]);
  for (let i = 0; i < rounds; i++) {
    // in a fresh order each round, so that no gap always follows the same one
    for (const j of shuffled(idleGaps.length)) {
      const g = idleGaps[j] as number;
      await new Promise<void>((r) => setTimeout(r, g));
      (ttftIdle[j] as number[]).push((await send(2, 1, false)).ttftMs);
    }
    for (let pass = 0; pass < DECODE_PASSES; pass++) {
      for (const j of shuffled(lengths.length)) {
        const o = await send(lengths[j] as number);
        (decodeGaps[j] as number[]).push(o.e2eMs - o.ttftMs);
        (ttftDecode[j] as number[]).push(o.ttftMs);
      }
      const one = await send(1);
      finishOne.push(one.e2eMs - one.ttftMs);
    }
    for (let p = 0; p < probes; p++) ttftProbe.push((await send(2)).ttftMs);
    ttftLong.push((await send(2, LONG_PROMPT)).ttftMs);
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
  // e2e - TTFT = first + finish + (n - 1) x s1: a least-squares line through one median per n
  const xs = lengths.map((n) => n - 1);
  const ys = decodeGaps.map((g) => median(g));
  const fit = lineFit(xs, ys);
  const finish = median(finishOne);
  const first = Math.max(0, fit.intercept - finish);
  const s1 = fit.slope;
  // the first frame of a request of 2 or more tokens: P and D pooled (the same request up to it)
  const a = median([...ttftProbe, ...ttftDecode.flat()]);
  const c = median(tpotK);
  const sK = c - (first + finish) / (tokens - 1);
  // a single sequence's decode step, as D measured it, is decode1 + step + token; C only splits
  // that between step and token (its requests reach the instance one admission apart, so they
  // decode in lockstep for part of their tokens only), and never makes it larger
  const path1 = Math.max(0, s1 - decode1);
  const token = Math.min(path1, Math.max(0, (sK - decodeK - path1) / (k - 1)));
  const step = path1 - token;
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
  const groups = [ttftProbe, ttftLong, ...ttftDecode, ...ttftIdle];
  const jitter = groups.flatMap((g) => g.map((x) => r3(x - median(g)))).sort((x, y) => x - y);
  const fields = {
    requestOverheadMs: r3(request),
    promptTokenOverheadMs: Number(promptToken.toPrecision(4)),
    finishOverheadMs: r3(finish),
    firstTokenOverheadMs: r3(first),
    stepOverheadMs: r3(step),
    tokenOverheadMs: r3(token),
    idleRequestOverheadMs: idleTable,
    requestJitterMs: jitter,
  };
  if (values.write) {
    const raw = JSON.parse(readFileSync(values.card, "utf8")) as Record<string, unknown>;
    const src = `npm run -s profile:path (direct server, ${rounds} rounds ${gapMs} ms apart, first token and decode step by a line through ${lengths.length} output lengths, ${jitter.length} jitter samples, load ${load0.toFixed(1)})`;
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
      ttft_ms: r3(a),
      decode_fit: {
        slope_ms: r3(s1),
        intercept_ms: r3(fit.intercept),
        r2: r3(fit.r2),
        e2e_minus_ttft_ms: Object.fromEntries(lengths.map((n, j) => [n, r3(ys[j] as number)])),
      },
      [`tpot_batch${k}_ms`]: r3(c),
      [`ttft_${LONG_PROMPT}tok_ms`]: r3(longA),
      jitter_samples: jitter.length,
      engine_ms: {
        [`prefill${LONG_PROMPT}`]: r3(prefillLong),
        prefill1: r3(prefill1),
        decode1: r3(decode1),
        [`decode${k}`]: r3(decodeK),
      },
      rounds,
      probes,
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
