/**
 * Trace-replay serving benchmark: replays a workload trace (Azure LLM inference CSV or Mooncake
 * JSONL; arrival, input length, output length, prefix hash ids) against a running server through
 * streamed `/v1/completions` (plain fetch and SSE parsing), open loop, and reports TTFT, TPOT and
 * end-to-end percentiles, token throughput and goodput under a TTFT + TPOT SLO.
 *
 *   npm run -s bench:serve -- --trace PATH [--base-url URL] [--model NAME] [--deployment ID]
 *       [--rate R] [--seed N] [--time-scale X] [--duration S] [--full] [--drain-timeout S]
 *       [--slo-ttft-ms A] [--slo-tpot-ms B] [--ctx N] [--vocab N] [--scale F] [--block-size N]
 *       [--format azure|mooncake] [--prompt-salt N] [--warmup N] [--api-key K] [--admin-key K]
 *       [--model-file PATH] [--dump-requests FILE] [--json]
 *
 * Arrivals: without --rate, the trace's own times relative to its first row, divided by
 * --time-scale; with --rate R, seeded Poisson arrivals at R per second carrying the trace's rows
 * in order. Requests arriving in the first --duration seconds (default 30) are sent; then the
 * in-flight ones get --drain-timeout seconds (default 15) before they are cancelled and counted
 * failed ("drain_timeout"). --full replays the whole trace (drain timeout 600 s); explicit flags
 * win over both defaults.
 *
 * Lengths are scaled into --ctx tokens (default 512) by the rule in bench/traces.ts: factor
 * min(1, ctx / p99(input + output)) (or --scale), each row clamped so input + output <= ctx;
 * Mooncake hash ids become fixed blocks of 16 * max(1, round(512 * factor / 16)) token ids.
 * Prompts are token ids in [3, vocab - 1]; `max_tokens` = the scaled output with `ignore_eos`, so
 * each request generates exactly that many tokens (greedy). TTFT: first chunk with text (or the
 * finish chunk); TPOT: (e2e - ttft) / (completion tokens - 1), for outputs of 2+ tokens; e2e: to
 * [DONE]. Throughput: generated tokens of completed requests / wall time; goodput: completed
 * requests with ttft <= A (default 2000) and tpot <= B (default 200) per second of wall time (wall
 * time: first send to the last request settling). Failures (non-2xx, error frames, network errors,
 * truncated streams, drain timeouts) count in `failed`, by reason in `failure_reasons`.
 *
 * Without --base-url it starts its own `wrangler dev` (local keys). The model: `--model NAME`
 * alone serves a model the server has; otherwise `--model-file PATH` (default
 * models/synthetic-moe.gguf, bench/model-file.ts) is served as its file name, uploaded first unless
 * it is the server's own default model. Prints one JSON object on its last line; with
 * `--dump-requests FILE` also writes one JSON line per request (row, lengths, due and sent times,
 * TTFT/TPOT/e2e or the failure) to FILE.
 */
import { writeFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import {
  ADMIN_KEY,
  type DevServer,
  LOCAL_KEY,
  startDevServer,
} from "../test/helpers/dev-server.ts";
import {
  DEFAULT_MODEL_FILE,
  errorText,
  modelIdOf,
  positiveInt,
  serveModelFile,
} from "./model-file.ts";
import { type Outcome, streamCompletion } from "./stream-request.ts";
import {
  type LoadedTrace,
  loadTrace,
  MOONCAKE_BLOCK_SIZE,
  poissonArrivals,
  promptTokenIds,
  scaledBlockTokens,
  scaleFactor,
  scaleLengths,
  summarize,
  type TraceFormat,
} from "./traces.ts";

const { values } = parseArgs({
  options: {
    "base-url": { type: "string" },
    model: { type: "string" },
    deployment: { type: "string" },
    trace: { type: "string" },
    format: { type: "string" },
    rate: { type: "string" },
    seed: { type: "string", default: "1" },
    "time-scale": { type: "string", default: "1" },
    duration: { type: "string" },
    full: { type: "boolean", default: false },
    "drain-timeout": { type: "string" },
    "slo-ttft-ms": { type: "string", default: "2000" },
    "slo-tpot-ms": { type: "string", default: "200" },
    ctx: { type: "string" },
    vocab: { type: "string" },
    scale: { type: "string" },
    "block-size": { type: "string", default: String(MOONCAKE_BLOCK_SIZE) },
    "prompt-salt": { type: "string" },
    warmup: { type: "string", default: "1" },
    "api-key": { type: "string" },
    "admin-key": { type: "string" },
    "model-file": { type: "string" },
    "dump-requests": { type: "string" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});

function fail(msg: string): never {
  console.error(`error: ${msg}`);
  process.exit(1);
}

/** An error after the server may have started: thrown, so `finally` stops it. */
function failRun(msg: string): never {
  throw new Error(msg);
}

function num(name: string, v: string | undefined, opts: { int?: boolean; min?: number } = {}) {
  const n = Number(v);
  const min = opts.min ?? 0;
  if (v === undefined || !Number.isFinite(n) || (opts.int && !Number.isInteger(n)) || n < min) {
    fail(`--${name} must be ${opts.int ? "an integer" : "a number"} >= ${min}, got "${v}"`);
  }
  return n;
}

function positive(name: string, v: string | undefined): number {
  const n = num(name, v);
  if (n <= 0) fail(`--${name} must be > 0, got "${v}"`);
  return n;
}

const tracePath = values.trace ?? fail("--trace PATH is required");
const format = values.format as TraceFormat | undefined;
if (format !== undefined && format !== "azure" && format !== "mooncake") {
  fail(`--format must be azure or mooncake, got "${format}"`);
}
// --model alone names a model the server already has; otherwise the checkpoint file is served
const modelFile =
  values["model-file"] ?? (values.model === undefined ? DEFAULT_MODEL_FILE : undefined);
const model = values.model ?? modelIdOf(modelFile as string);
const deployment = values.deployment;
const rate = values.rate === undefined ? null : positive("rate", values.rate);
const seed = num("seed", values.seed, { int: true });
const timeScale = positive("time-scale", values["time-scale"]);
const full = values.full === true;
const durationS =
  values.duration !== undefined
    ? positive("duration", values.duration)
    : full
      ? Number.POSITIVE_INFINITY
      : 30;
const drainS =
  values["drain-timeout"] !== undefined
    ? num("drain-timeout", values["drain-timeout"])
    : full
      ? 600
      : 15;
const sloTtftMs = positive("slo-ttft-ms", values["slo-ttft-ms"]);
const sloTpotMs = positive("slo-tpot-ms", values["slo-tpot-ms"]);
const ctxArg = values.ctx === undefined ? null : num("ctx", values.ctx, { int: true, min: 2 });
const vocabArg =
  values.vocab === undefined ? null : num("vocab", values.vocab, { int: true, min: 4 });
const scaleArg = values.scale === undefined ? null : positive("scale", values.scale);
const traceBlockSize = num("block-size", values["block-size"], { int: true, min: 1 });
const promptSalt =
  values["prompt-salt"] !== undefined
    ? num("prompt-salt", values["prompt-salt"], { int: true })
    : Math.floor(Math.random() * 0x7fffffff);
const warmup = num("warmup", values.warmup, { int: true });
const apiKey = values["api-key"] ?? process.env.FLOWSERVE_API_KEY ?? LOCAL_KEY;
const DEFAULT_CTX = 512;
const FALLBACK_VOCAB = 512;

const log = (msg: string) => {
  if (!values.json) console.log(msg);
};
const warn = (msg: string) => console.error(`warning: ${msg}`);
const round = (x: number, digits = 1) => Number(x.toFixed(digits));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));

// ---------------------------------------------------------------------------------------------
// Server and model

interface ModelInfo {
  contextLength: number | null;
  vocabSize: number | null;
}

/**
 * Checks the model exists (GET /v1/models/:name, 404 otherwise) and learns its context and
 * vocabulary where the server says them: fields of the model object if any, else the admin
 * registry record when an admin key is at hand.
 */
async function modelInfo(baseUrl: string, adminKey: string | null): Promise<ModelInfo> {
  const res = await fetch(`${baseUrl}/v1/models/${encodeURIComponent(model)}`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  if (res.status !== 200) failRun(`GET /v1/models/${model}: ${res.status} ${await errorText(res)}`);
  const o = (await res.json()) as Record<string, unknown>;
  const info: ModelInfo = {
    contextLength: positiveInt(o.context_length) ?? positiveInt(o.max_model_len),
    vocabSize: positiveInt(o.vocab_size),
  };
  if ((info.contextLength === null || info.vocabSize === null) && adminKey) {
    const r = await fetch(`${baseUrl}/api/models`, {
      headers: { authorization: `Bearer ${adminKey}` },
    }).catch(() => null);
    if (r?.status === 200) {
      const list = (await r.json()) as {
        data?: { name?: string; summary?: Record<string, unknown> }[];
      };
      const rec = list.data?.find((m) => m.name === model);
      info.contextLength ??= positiveInt(rec?.summary?.contextLength);
      info.vocabSize ??= positiveInt(rec?.summary?.vocabSize);
    }
  }
  return info;
}

// ---------------------------------------------------------------------------------------------
// One request

interface ScheduledRequest {
  index: number;
  rowIndex: number;
  arrivalMs: number;
  inputTokens: number;
  outputTokens: number;
  hashIds?: number[];
}

/** Sends one streamed completion and times it; never throws. */
function runRequest(
  baseUrl: string,
  prompt: number[],
  maxTokens: number,
  signal: AbortSignal,
): Promise<Outcome> {
  return streamCompletion({ baseUrl, apiKey, model, deployment, prompt, maxTokens, signal });
}

// ---------------------------------------------------------------------------------------------
// Schedule

interface Schedule {
  trace: LoadedTrace;
  requests: ScheduledRequest[];
  factor: number;
  blockTokens: number;
  traceExhausted: boolean;
}

async function buildSchedule(ctx: number): Promise<Schedule> {
  const durationMs = durationS * 1000;
  let arrivals: number[] | null = null;
  let keep: (rowIndex: number, relMs: number) => boolean;
  if (rate !== null) {
    if (Number.isFinite(durationMs)) {
      const a = poissonArrivals(rate, seed, durationMs);
      arrivals = a;
      keep = (i) => i < a.length;
    } else {
      keep = () => true;
    }
  } else {
    keep = (_i, relMs) => relMs >= 0 && relMs / timeScale < durationMs;
  }
  const trace = await loadTrace(tracePath, keep, format);
  if (rate !== null && arrivals === null) {
    arrivals = poissonArrivals(rate, seed, Number.POSITIVE_INFINITY, trace.rows.length);
  }
  const factor = scaleArg ?? scaleFactor(trace.p99TotalTokens, ctx);
  const blockTokens = scaledBlockTokens(traceBlockSize, factor);
  const rows = arrivals === null ? trace.rows : trace.rows.slice(0, arrivals.length);
  const traceExhausted = arrivals !== null && trace.rows.length < arrivals.length;
  const t0 = trace.rows[0]?.timestampMs ?? 0;
  const requests = rows.map((r, i): ScheduledRequest => {
    const { input, output } = scaleLengths(r.inputLength, r.outputLength, factor, ctx);
    return {
      index: i,
      rowIndex: r.rowIndex,
      arrivalMs: arrivals ? (arrivals[i] as number) : (r.timestampMs - t0) / timeScale,
      inputTokens: input,
      outputTokens: output,
      hashIds: r.hashIds,
    };
  });
  // Rows are usually in time order already; a stable sort keeps ties in file order.
  requests.sort((a, b) => a.arrivalMs - b.arrivalMs);
  return { trace, requests, factor, blockTokens, traceExhausted };
}

/**
 * One JSON line per request, in arrival order: the trace row, its lengths, when it was due and
 * sent (ms from the replay's start), and its timings or failure reason (`--dump-requests`).
 */
function dumpLines(outcomes: readonly (Outcome & { req: ScheduledRequest; sentMs: number })[]) {
  const rows = [...outcomes].sort((x, y) => x.req.index - y.req.index);
  const r2 = (x: number | null) => (x === null ? null : round(x, 2));
  return rows
    .map((o) =>
      JSON.stringify({
        row: o.req.rowIndex,
        arrival_ms: r2(o.req.arrivalMs),
        sent_ms: r2(o.sentMs),
        input_tokens: o.req.inputTokens,
        output_tokens: o.req.outputTokens,
        ...(o.ok
          ? {
              ttft_ms: r2(o.ttftMs),
              tpot_ms: r2(o.tpotMs),
              e2e_ms: r2(o.e2eMs),
              cached_tokens: o.cachedTokens,
            }
          : { failure: o.reason, ...(o.detail ? { detail: o.detail } : {}) }),
      }),
    )
    .map((l) => `${l}\n`)
    .join("");
}

// ---------------------------------------------------------------------------------------------
// Main

async function main(): Promise<void> {
  let server: DevServer | null = null;
  let baseUrl = values["base-url"]?.replace(/\/+$/, "");
  const external = baseUrl !== undefined;
  const onSignal = () => {
    void (server?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    if (!baseUrl) {
      log("starting wrangler dev ...");
      server = await startDevServer();
      baseUrl = server.url;
    }
    const adminKey = values["admin-key"] ?? (external ? null : ADMIN_KEY);
    let info: ModelInfo = { contextLength: null, vocabSize: null };
    if (modelFile) {
      const served = await serveModelFile(baseUrl, { apiKey, adminKey }, modelFile, model).catch(
        (e: Error) => failRun(`${e.message} (--model-file with --base-url needs --admin-key)`),
      );
      info = { contextLength: served.contextLength, vocabSize: served.vocabSize };
      log(
        served.uploaded ? `uploaded ${modelFile} as ${model}` : `${model} is the server's default`,
      );
    }
    const found = await modelInfo(baseUrl, adminKey);
    info = {
      contextLength: info.contextLength ?? found.contextLength,
      vocabSize: info.vocabSize ?? found.vocabSize,
    };
    let ctx = ctxArg ?? DEFAULT_CTX;
    if (info.contextLength !== null && ctx > info.contextLength) {
      warn(`--ctx ${ctx} is above the model's context ${info.contextLength}; using that`);
      ctx = info.contextLength;
    }
    let vocab = vocabArg ?? info.vocabSize;
    if (vocab === null) {
      warn(`vocabulary size unknown (pass --vocab or --admin-key); assuming ${FALLBACK_VOCAB}`);
      vocab = FALLBACK_VOCAB;
    }

    const sched = await buildSchedule(ctx);
    const { trace, requests, factor, blockTokens } = sched;
    if (requests.length === 0) failRun("no requests fall in the replay window (try --time-scale)");
    log(
      `${basename(tracePath)} (${trace.format}, ${trace.numRows} rows): ${requests.length} ` +
        `requests over ${round((requests.at(-1)?.arrivalMs ?? 0) / 1000)} s; scale ${factor.toFixed(5)} ` +
        `(ctx ${ctx}, trace p99 ${round(trace.p99TotalTokens)}), block ${blockTokens} tokens`,
    );

    // Warm-up: loads the model onto its NPU; unique prompts, so nothing is left cached.
    for (let i = 0; i < warmup; i++) {
      const prompt = promptTokenIds(
        { requestIndex: 2 ** 40 + i, inputLength: Math.min(16, ctx - 2) },
        { blockTokens, vocab, salt: promptSalt },
      );
      const r = await runRequest(baseUrl, prompt, 2, new AbortController().signal);
      if (!r.ok) {
        const out = server ? `\nserver output (tail):\n${server.output().slice(-3000)}` : "";
        failRun(`warm-up request failed: ${r.reason} ${r.detail ?? ""}${out}`);
      }
    }

    // Open-loop replay.
    const abort = new AbortController();
    const outcomes: (Outcome & { req: ScheduledRequest; sentMs: number })[] = [];
    const pending = new Set<Promise<void>>();
    let maxLagMs = 0;
    let sentTokens = 0;
    const start = performance.now();
    let lastLog = start;
    for (const req of requests) {
      const wait = start + req.arrivalMs - performance.now();
      if (wait > 0) await sleep(wait);
      const sentMs = performance.now() - start;
      maxLagMs = Math.max(maxLagMs, sentMs - req.arrivalMs);
      const prompt = promptTokenIds(
        { requestIndex: req.index, inputLength: req.inputTokens, hashIds: req.hashIds },
        { blockTokens, vocab, salt: promptSalt },
      );
      sentTokens += prompt.length;
      const p: Promise<void> = runRequest(baseUrl, prompt, req.outputTokens, abort.signal).then(
        (o) => {
          outcomes.push({ ...o, req, sentMs });
          pending.delete(p);
        },
      );
      pending.add(p);
      if (performance.now() - lastLog > 5000) {
        lastLog = performance.now();
        log(
          `t=${((lastLog - start) / 1000).toFixed(0)} s: sent ${req.index + 1}, ` +
            `done ${outcomes.length}, in flight ${pending.size}`,
        );
      }
    }
    const scheduleEnd = performance.now();
    if (pending.size > 0) {
      log(`waiting for ${pending.size} in-flight requests (at most ${drainS} s)`);
      const timer = setTimeout(() => abort.abort(), drainS * 1000);
      await Promise.all([...pending]);
      clearTimeout(timer);
    }
    const wallMs = performance.now() - start;
    if (values["dump-requests"]) writeFileSync(values["dump-requests"], dumpLines(outcomes));

    const ok = outcomes.flatMap((o) => (o.ok ? [o] : []));
    const reasons: Record<string, number> = {};
    for (const o of outcomes) if (!o.ok) reasons[o.reason] = (reasons[o.reason] ?? 0) + 1;
    const tokens = ok.reduce((s, o) => s + o.completionTokens, 0);
    const met = ok.filter(
      (o) => o.ttftMs <= sloTtftMs && (o.tpotMs === null || o.tpotMs <= sloTpotMs),
    ).length;
    const wallS = wallMs / 1000;
    const result = {
      ttft_ms: summarize(ok.map((o) => o.ttftMs)),
      tpot_ms: summarize(
        ok.flatMap((o) => (o.tpotMs === null ? [] : [o.tpotMs])),
        2,
      ),
      e2e_ms: summarize(ok.map((o) => o.e2eMs)),
      throughput_tokens_per_s: round(tokens / wallS, 2),
      goodput_requests_per_s: round(met / wallS, 3),
      completed: ok.length,
      failed: outcomes.length - ok.length,
      failure_reasons: reasons,
      slo_ttft_ms: sloTtftMs,
      slo_tpot_ms: sloTpotMs,
      slo_met: met,
      requests_per_s: round(ok.length / wallS, 3),
      trace: basename(tracePath),
      format: trace.format,
      trace_rows: trace.numRows,
      num_requests: requests.length,
      rate,
      seed: rate === null ? null : seed,
      time_scale: rate === null ? timeScale : null,
      duration_s: Number.isFinite(durationS) ? durationS : null,
      full,
      trace_exhausted: sched.traceExhausted,
      schedule_s: round((scheduleEnd - start) / 1000, 2),
      wall_s: round(wallS, 2),
      drain_timeout_s: drainS,
      max_send_lag_ms: round(maxLagMs),
      ctx,
      scale_factor: round(factor, 6),
      trace_p99_total_tokens: round(trace.p99TotalTokens),
      trace_block_size: trace.format === "mooncake" ? traceBlockSize : null,
      block_tokens: trace.format === "mooncake" ? blockTokens : null,
      ideal_block_tokens: trace.format === "mooncake" ? round(traceBlockSize * factor, 2) : null,
      input_tokens_sent: sentTokens,
      output_tokens_requested: requests.reduce((s, r) => s + r.outputTokens, 0),
      prompt_tokens_total: ok.reduce((s, o) => s + o.promptTokens, 0),
      cached_tokens_total: ok.reduce((s, o) => s + o.cachedTokens, 0),
      completion_tokens_total: tokens,
      short_outputs: ok.filter((o) => o.completionTokens !== o.req.outputTokens).length,
      mean_input_tokens: round(requests.reduce((s, r) => s + r.inputTokens, 0) / requests.length),
      mean_output_tokens: round(requests.reduce((s, r) => s + r.outputTokens, 0) / requests.length),
      model,
      deployment: deployment ?? null,
      vocab,
      prompt_salt: promptSalt,
      base_url_kind: external ? "external" : "wrangler dev",
      node: process.version,
    };
    log(
      `completed ${result.completed}, failed ${result.failed}; ttft p50 ${result.ttft_ms.p50} ms, ` +
        `tpot p50 ${result.tpot_ms.p50} ms, ${result.throughput_tokens_per_s} tok/s, goodput ` +
        `${result.goodput_requests_per_s} req/s`,
    );
    console.log(JSON.stringify(result));
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await server?.stop();
  }
}

main().catch((e: unknown) => {
  const err = e as Error & { cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  console.error(`error: ${err.message}${cause ? ` (${cause})` : ""}`);
  process.exitCode = 1;
});
