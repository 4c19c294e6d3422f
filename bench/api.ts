/**
 * Serving benchmark through the OpenAI API (plain fetch and SSE parsing, no SDK): time to first
 * token and end-to-end time of one 64-token stream (median of several runs after a warm-up), and
 * total tokens/s of 1 and of 16 concurrent 64-token streams (median of several runs). Greedy with
 * `ignore_eos`, so every stream produces all its tokens. Also the p50 of sequential GET /health
 * requests, the fixed cost of one request on the path. Without --base-url it starts its own
 * server (the local development keys) and stops it at the end: `--server wrangler` (default)
 * runs `wrangler dev`, as `npm start` does; `--server direct` serves the deploy bundle with
 * Miniflare, without wrangler dev's proxy in front of the worker (test/helpers/direct-server.ts),
 * which is closer to how requests reach the worker on Cloudflare.
 *
 *   npm run -s bench:api -- --json [--base-url URL] [--model NAME] [--api-key KEY]
 *                                  [--server wrangler|direct] [--log-level LEVEL]
 *                                  [--runs N] [--throughput-runs N] [--tokens N]
 *                                  [--health-requests N]
 *
 * With --vs-llama-server PATH (llama.cpp's `llama-server` binary) it compares against llama.cpp
 * on ../shared/models/stories260K-f32.gguf: it starts its own server (`--server`; `both` starts
 * wrangler dev and the direct server and measures each as its own target), uploads the GGUF
 * as model `stories260K`, starts llama-server on a free loopback port with the same GGUF (one
 * slot per concurrent stream, `--llama-threads` threads (default 2), the model's context per
 * slot), and drives all with the same client code in rounds that rotate which server goes
 * first, scenario by scenario: GET /health latency, single streams (TTFT, tokens/s),
 * `--concurrency` concurrent streams (total tokens/s), and `--short-clients` clients sending
 * `--short-tokens`-token completions back to back for `--short-duration-s` (requests/s,
 * failures). It then times the pure-compute hops of a streamed token in this process
 * (bench/hops.ts) and attributes the rest of the per-token time.
 *
 *   npm run -s bench:api -- --json --vs-llama-server PATH [--server wrangler|direct|both]
 *       [--rounds N] [--runs N] [--throughput-runs N] [--short-duration-s S] [--short-warmup-s S]
 *       [--short-clients N] [--short-tokens N] [--health-requests N] [--engine-runs N]
 *       [--llama-threads N] [--log-level LEVEL]
 *
 * Our servers run with wrangler.toml's LOG_LEVEL (info: a few JSON lines per request) unless
 * --log-level is given; with `both`, `ours` and `ours_over_llama_server` are the direct
 * server's and `ours_wrangler_dev`/`ours_direct` hold each.
 *
 * Prints one JSON object on its last line.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import {
  ADMIN_KEY,
  type DevServer,
  LOCAL_KEY,
  startDevServer,
} from "../test/helpers/dev-server.ts";
import { startDirectServer } from "../test/helpers/direct-server.ts";
import { REFERENCE_MODELS_DIR } from "../test/helpers/models.ts";
import { measureHops } from "./hops.ts";
import { type LlamaServer, startLlamaServer } from "./llama-server.ts";

const { values } = parseArgs({
  options: {
    "base-url": { type: "string" },
    model: { type: "string" },
    "api-key": { type: "string" },
    runs: { type: "string", default: "5" },
    "throughput-runs": { type: "string", default: "3" },
    tokens: { type: "string", default: "64" },
    concurrency: { type: "string", default: "16" },
    "vs-llama-server": { type: "string" },
    rounds: { type: "string", default: "3" },
    "short-duration-s": { type: "string", default: "5" },
    "short-warmup-s": { type: "string", default: "1" },
    "short-clients": { type: "string", default: "64" },
    "short-tokens": { type: "string", default: "8" },
    "engine-runs": { type: "string", default: "10" },
    "llama-threads": { type: "string", default: "2" },
    server: { type: "string", default: "wrangler" },
    "health-requests": { type: "string", default: "100" },
    "log-level": { type: "string" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});

function fail(msg: string): never {
  console.error(`error: ${msg}`);
  process.exit(1);
}

function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a positive integer, got "${v}"`);
  return n;
}

function positiveNumber(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) fail(`--${name} must be a positive number, got "${v}"`);
  return n;
}

/** --vs-llama-server: the model both servers serve. */
const VS_MODEL_NAME = "stories260K";
const VS_MODEL_FILE = "stories260K-f32.gguf";

/** How our worker is served: `wrangler dev`, or the deploy bundle on Miniflare without its proxy. */
type ServerKind = "wrangler" | "direct";
const SERVER_KINDS: Record<string, ServerKind[]> = {
  wrangler: ["wrangler"],
  direct: ["direct"],
  both: ["wrangler", "direct"],
};
const SERVER_LABEL: Record<ServerKind, string> = {
  wrangler: "wrangler dev",
  direct: "direct (Miniflare, deploy bundle)",
};
/** JSON key suffix of each kind's results under --server both. */
const SERVER_KEY: Record<ServerKind, string> = { wrangler: "wrangler_dev", direct: "direct" };

const serverKinds = SERVER_KINDS[values.server as string];
if (!serverKinds) fail(`--server must be wrangler, direct or both, got "${values.server}"`);
const logLevel = values["log-level"];
if (logLevel !== undefined && !["debug", "info", "warn", "error"].includes(logLevel)) {
  fail(`--log-level must be debug, info, warn or error, got "${logLevel}"`);
}
/** Vars our servers start with on top of wrangler.toml's and the local keys. */
const serverVars: Record<string, string> = logLevel !== undefined ? { LOG_LEVEL: logLevel } : {};

function startOurs(kind: ServerKind): Promise<DevServer> {
  return kind === "wrangler" ? startDevServer(serverVars) : startDirectServer(serverVars);
}

const llamaServerBinary = values["vs-llama-server"];
if (llamaServerBinary !== undefined) {
  if (values["base-url"] !== undefined) fail("--vs-llama-server starts its own servers");
  if (values.model !== undefined) fail(`--vs-llama-server always serves ${VS_MODEL_NAME}`);
} else {
  if (serverKinds.length > 1) fail("--server both needs --vs-llama-server");
  if (values["base-url"] !== undefined && values.server !== "wrangler") {
    fail("--server starts a server; --base-url uses one already running");
  }
}
const runs = positiveInt("runs", values.runs);
const throughputRuns = positiveInt("throughput-runs", values["throughput-runs"]);
const numTokens = positiveInt("tokens", values.tokens);
const concurrency = positiveInt("concurrency", values.concurrency);
const rounds = positiveInt("rounds", values.rounds);
const shortDurationS = positiveNumber("short-duration-s", values["short-duration-s"]);
const shortWarmupS = positiveNumber("short-warmup-s", values["short-warmup-s"]);
const shortClients = positiveInt("short-clients", values["short-clients"]);
const shortTokens = positiveInt("short-tokens", values["short-tokens"]);
const engineRuns = positiveInt("engine-runs", values["engine-runs"]);
const llamaThreads = positiveInt("llama-threads", values["llama-threads"]);
const healthRequests = positiveInt("health-requests", values["health-requests"]);
const apiKey = values["api-key"] ?? process.env.FLOWSERVE_API_KEY ?? LOCAL_KEY;
const PROMPTS = ["Once upon a time", "Lily wanted", "The dog", "One day, a little", "Tom and Sue"];
/** Request timeout: a stuck server fails the request instead of hanging the benchmark. */
const REQUEST_TIMEOUT_MS = 60_000;

const median = (xs: number[]) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const percentile = (xs: number[], q: number) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
};
const round = (x: number, digits = 1) => Number(x.toFixed(digits));
const log = (msg: string) => {
  if (!values.json) console.log(msg);
};

/** One OpenAI-compatible server as the client sees it. */
interface Target {
  name: string;
  baseUrl: string;
  apiKey: string;
  model: string;
}

interface StreamTiming {
  ttftMs: number;
  e2eMs: number;
  completionTokens: number;
  /** Where completionTokens came from: the server's `usage`, or a count of text chunks. */
  tokenSource: "usage" | "deltas";
  promptTokens: number | null;
  text: string;
  /** llama-server's own `timings` on its last chunk (absent from our worker's chunks). */
  serverTimings: { promptMs: number; predictedMs: number; predictedN: number } | null;
}

function completionBody(t: Target, prompt: string, maxTokens: number, stream: boolean): string {
  return JSON.stringify({
    model: t.model,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  });
}

async function post(t: Target, body: string): Promise<Response> {
  return fetch(`${t.baseUrl}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${t.apiKey}`, "content-type": "application/json" },
    body,
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

/** One streamed completion; times from sending the request to the first text and to [DONE]. */
async function streamOnce(t: Target, prompt: string, maxTokens = numTokens): Promise<StreamTiming> {
  const t0 = performance.now();
  const res = await post(t, completionBody(t, prompt, maxTokens, true));
  if (res.status !== 200 || !res.body) {
    throw new Error(`POST /v1/completions: ${res.status} ${await res.text()}`);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let ttftMs = -1;
  let usageTokens = -1;
  let promptTokens: number | null = null;
  let textChunks = 0;
  let text = "";
  let serverTimings: StreamTiming["serverTimings"] = null;
  let done = false;
  while (!done) {
    const r = await reader.read();
    if (r.done) break;
    buf += decoder.decode(r.value, { stream: true });
    let end = buf.indexOf("\n\n");
    while (end >= 0) {
      const frame = buf.slice(0, end);
      buf = buf.slice(end + 2);
      end = buf.indexOf("\n\n");
      if (!frame.startsWith("data:")) continue;
      const data = frame.slice(5).trim();
      if (data === "[DONE]") {
        done = true;
        break;
      }
      const chunk = JSON.parse(data) as {
        error?: { message: string };
        choices?: { text: string }[];
        usage?: { completion_tokens: number; prompt_tokens: number } | null;
        timings?: { prompt_ms: number; predicted_ms: number; predicted_n: number };
      };
      if (chunk.error) throw new Error(`stream error: ${chunk.error.message}`);
      for (const c of chunk.choices ?? []) {
        if (c.text.length === 0) continue;
        if (ttftMs < 0) ttftMs = performance.now() - t0;
        textChunks++;
        text += c.text;
      }
      if (chunk.usage) {
        usageTokens = chunk.usage.completion_tokens;
        promptTokens = chunk.usage.prompt_tokens;
      }
      if (chunk.timings) {
        const { prompt_ms, predicted_ms, predicted_n } = chunk.timings;
        serverTimings = { promptMs: prompt_ms, predictedMs: predicted_ms, predictedN: predicted_n };
      }
    }
  }
  const e2eMs = performance.now() - t0;
  if (!done) throw new Error("the stream ended without [DONE]");
  if (ttftMs < 0) throw new Error("the stream had no text");
  const fromUsage = usageTokens >= 0;
  return {
    ttftMs,
    e2eMs,
    completionTokens: fromUsage ? usageTokens : textChunks,
    tokenSource: fromUsage ? "usage" : "deltas",
    promptTokens,
    text,
    serverTimings,
  };
}

/** One non-streamed completion; its `usage.completion_tokens`. */
async function completeOnce(t: Target, prompt: string, maxTokens: number): Promise<number> {
  const res = await post(t, completionBody(t, prompt, maxTokens, false));
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST /v1/completions: ${res.status} ${text}`);
  const body = JSON.parse(text) as { usage?: { completion_tokens: number } };
  if (!body.usage) throw new Error("the response had no usage");
  return body.usage.completion_tokens;
}

/** Total completion tokens per second of `n` concurrent streams (no-flag mode: any failure throws). */
async function throughput(t: Target, n: number): Promise<number> {
  const t0 = performance.now();
  const all = await Promise.all(
    Array.from({ length: n }, (_, i) => streamOnce(t, PROMPTS[i % PROMPTS.length] as string)),
  );
  const s = (performance.now() - t0) / 1000;
  return all.reduce((sum, r) => sum + r.completionTokens, 0) / s;
}

/**
 * `n` sequential GET /health requests (no auth, no body to speak of): the fixed cost of one
 * request on the path from this client to the server and back. Returns the latencies in ms of
 * those that answered 200; `onError` gets the others.
 */
async function healthLatencies(
  baseUrl: string,
  n: number,
  onError: (e: unknown) => void = (e) => {
    throw e;
  },
): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    try {
      const t0 = performance.now();
      const res = await fetch(`${baseUrl}/health`, {
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      await res.arrayBuffer();
      const ms = performance.now() - t0;
      if (res.status !== 200) throw new Error(`GET /health: ${res.status}`);
      out.push(ms);
    } catch (e) {
      onError(e);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Default mode: one server

async function benchOne(): Promise<void> {
  let server: DevServer | null = null;
  let baseUrl = values["base-url"]?.replace(/\/+$/, "");
  const external = baseUrl !== undefined;
  const model = values.model ?? "lemma-moe";
  const kind = serverKinds[0] as ServerKind;
  try {
    if (!baseUrl) {
      server = await startOurs(kind);
      baseUrl = server.url;
    }
    const target: Target = { name: "ours", baseUrl, apiKey, model };

    // Warm-up: loads the model onto its NPU and warms the JIT.
    await streamOnce(target, PROMPTS[0] as string);
    await throughput(target, concurrency);
    await healthLatencies(baseUrl, 10);
    const health = await healthLatencies(baseUrl, healthRequests);
    log(`GET /health p50 ${median(health).toFixed(2)} ms`);

    const ttft: number[] = [];
    const e2e: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await streamOnce(target, PROMPTS[i % PROMPTS.length] as string);
      if (r.completionTokens !== numTokens) {
        throw new Error(`expected ${numTokens} tokens, got ${r.completionTokens}`);
      }
      ttft.push(r.ttftMs);
      e2e.push(r.e2eMs);
      log(`run ${i}: ttft ${r.ttftMs.toFixed(1)} ms, e2e ${r.e2eMs.toFixed(1)} ms`);
    }

    const tps1: number[] = [];
    const tpsN: number[] = [];
    for (let i = 0; i < throughputRuns; i++) {
      tps1.push(await throughput(target, 1));
      tpsN.push(await throughput(target, concurrency));
      log(
        `throughput run ${i}: 1 -> ${tps1.at(-1)?.toFixed(0)} tok/s, ${concurrency} -> ${tpsN.at(-1)?.toFixed(0)} tok/s`,
      );
    }

    const ttftP50 = median(ttft);
    const e2eP50 = median(e2e);
    const t1 = median(tps1);
    const tN = median(tpsN);
    const result = {
      ttft_ms: { p50: round(ttftP50) },
      e2e_ms: { p50: round(e2eP50) },
      ttft_over_e2e: round(ttftP50 / e2eP50, 3),
      tokens_per_s: { "1": round(t1), [String(concurrency)]: round(tN) },
      [`speedup_${concurrency}_over_1`]: round(tN / t1, 2),
      health_ms: { p50: round(median(health), 2), requests: health.length },
      model,
      base_url_kind: external ? "external" : SERVER_LABEL[kind],
      log_level: external ? null : (logLevel ?? "wrangler.toml"),
      tokens_per_stream: numTokens,
      runs,
      throughput_runs: throughputRuns,
      node: process.version,
    };
    console.log(JSON.stringify(result));
  } finally {
    await server?.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// --vs-llama-server: the same load on our worker and on llama.cpp's server

/** What one server did over all rounds. */
class Tally {
  ttft: number[] = [];
  e2e: number[] = [];
  tps1: number[] = [];
  tpsN: number[] = [];
  rps: number[] = [];
  shortLatency: number[] = [];
  shortCompleted = 0;
  health: number[] = [];
  /** Server-reported prompt time and decode time per token of the single streams, if any. */
  serverPromptMs: number[] = [];
  serverDecodeMsPerToken: number[] = [];
  failed = { stream_1: 0, [`stream_${concurrency}`]: 0, short: 0, health: 0 } as Record<
    string,
    number
  >;
  errors = new Set<string>();
  tokenSources = new Set<string>();

  failure(kind: string, e: unknown): void {
    this.failed[kind] = (this.failed[kind] ?? 0) + 1;
    if (this.errors.size < 5) this.errors.add((e as Error).message.slice(0, 300));
  }

  /** A stream that must have produced exactly `numTokens` tokens. */
  checked(r: StreamTiming): StreamTiming {
    this.tokenSources.add(r.tokenSource);
    if (r.completionTokens !== numTokens) {
      throw new Error(`expected ${numTokens} tokens, got ${r.completionTokens} (${r.tokenSource})`);
    }
    return r;
  }
}

async function singleStreams(t: Target, tally: Tally, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    try {
      const r = tally.checked(await streamOnce(t, PROMPTS[i % PROMPTS.length] as string));
      tally.ttft.push(r.ttftMs);
      tally.e2e.push(r.e2eMs);
      tally.tps1.push(r.completionTokens / (r.e2eMs / 1000));
      if (r.serverTimings) {
        tally.serverPromptMs.push(r.serverTimings.promptMs);
        tally.serverDecodeMsPerToken.push(r.serverTimings.predictedMs / r.serverTimings.predictedN);
      }
    } catch (e) {
      tally.failure("stream_1", e);
    }
  }
}

async function concurrentStreams(t: Target, tally: Tally): Promise<void> {
  const t0 = performance.now();
  const all = await Promise.allSettled(
    Array.from({ length: concurrency }, (_, i) =>
      streamOnce(t, PROMPTS[i % PROMPTS.length] as string).then((r) => tally.checked(r)),
    ),
  );
  const s = (performance.now() - t0) / 1000;
  let tokens = 0;
  for (const r of all) {
    if (r.status === "fulfilled") tokens += r.value.completionTokens;
    else tally.failure(`stream_${concurrency}`, r.reason);
  }
  tally.tpsN.push(tokens / s);
}

/**
 * `shortClients` clients each sending non-streamed `shortTokens`-token completions back to back
 * until `durationS` has passed (requests in flight then are finished and counted). Requests/s
 * is completed requests over the time until the last client finished.
 */
async function shortRequests(t: Target, tally: Tally | null, durationS: number): Promise<void> {
  const t0 = performance.now();
  const endAt = t0 + durationS * 1000;
  let completed = 0;
  const client = async (c: number) => {
    for (let i = 0; performance.now() < endAt; i++) {
      try {
        const prompt = PROMPTS[(c + i) % PROMPTS.length] as string;
        const sent = performance.now();
        const n = await completeOnce(t, prompt, shortTokens);
        if (n !== shortTokens) throw new Error(`expected ${shortTokens} tokens, got ${n}`);
        completed++;
        tally?.shortLatency.push(performance.now() - sent);
      } catch (e) {
        tally?.failure("short", e);
      }
    }
  };
  await Promise.all(Array.from({ length: shortClients }, (_, c) => client(c)));
  if (!tally) return;
  tally.shortCompleted += completed;
  tally.rps.push(completed / ((performance.now() - t0) / 1000));
}

/** Uploads the GGUF to our worker through the admin route. */
async function uploadModel(baseUrl: string, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
  const res = await fetch(`${baseUrl}/api/models/${VS_MODEL_NAME}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
    body: bytes,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`upload of ${VS_MODEL_NAME}: ${res.status} ${text}`);
}

function summary(t: Tally) {
  return {
    ttft_ms: { p50: round(median(t.ttft)) },
    e2e_ms: { p50: round(median(t.e2e)) },
    tokens_per_s: {
      "1": round(median(t.tps1)),
      [String(concurrency)]: round(median(t.tpsN)),
    },
    short_requests: {
      requests_per_s: round(median(t.rps)),
      completed: t.shortCompleted,
      failed: t.failed.short ?? 0,
      latency_ms: {
        p50: round(median(t.shortLatency)),
        p99: round(percentile(t.shortLatency, 0.99)),
      },
    },
    failed: t.failed,
    errors: [...t.errors],
    token_count_source: [...t.tokenSources].join(","),
    health_ms: { p50: round(median(t.health), 2), p99: round(percentile(t.health, 0.99), 2) },
    ...(t.serverDecodeMsPerToken.length > 0
      ? {
          server_reported_1_stream: {
            prompt_ms_p50: round(median(t.serverPromptMs), 3),
            decode_ms_per_token_p50: round(median(t.serverDecodeMsPerToken), 4),
          },
        }
      : {}),
    /** min and max over the samples, to show how noisy the medians are. */
    range: {
      [`tokens_per_s_${concurrency}`]: [round(Math.min(...t.tpsN)), round(Math.max(...t.tpsN))],
      requests_per_s: [round(Math.min(...t.rps)), round(Math.max(...t.rps))],
    },
    samples: {
      stream_1: t.e2e.length,
      [`stream_${concurrency}`]: t.tpsN.length,
      short: t.rps.length,
      health: t.health.length,
    },
  };
}

/** One of our servers in a --vs-llama-server run. */
interface Ours {
  kind: ServerKind;
  server: DevServer | null;
  target: Target;
  tally: Tally;
}

async function benchVsLlamaServer(binary: string): Promise<void> {
  const ggufPath = join(REFERENCE_MODELS_DIR, VS_MODEL_FILE);
  const bytes = new Uint8Array(readFileSync(ggufPath));
  const modelCtx = modelConfigFromGguf(
    parseGguf(bytes, { headerOnly: true }),
  ).maxPositionEmbeddings;

  // With one server kind its target keeps the name "ours" (and its keys in the JSON).
  const both = serverKinds.length > 1;
  const ours: Ours[] = serverKinds.map((kind) => ({
    kind,
    server: null,
    target: {
      name: both ? `ours_${SERVER_KEY[kind]}` : "ours",
      baseUrl: "",
      apiKey,
      model: VS_MODEL_NAME,
    },
    tally: new Tally(),
  }));
  let llama: LlamaServer | null = null;
  const stopAll = async () => {
    await Promise.all([...ours.map((o) => o.server?.stop()), llama?.stop()]);
  };
  const onSignal = (sig: NodeJS.Signals) => {
    void stopAll().finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const theirs = new Tally();
  let llamaArgs: string[] = [];
  let llamaHttpThreads: number | null = null;
  const greedyText: Record<string, string> = {};
  const promptTokens: Record<string, number | null> = {};
  try {
    log(`starting ${ours.map((o) => SERVER_LABEL[o.kind]).join(" and ")} and llama-server`);
    const [llamaStart, ...oursStart] = await Promise.allSettled([
      startLlamaServer({
        binary,
        model: ggufPath,
        slots: concurrency,
        threads: llamaThreads,
        ctx: concurrency * modelCtx,
      }),
      ...ours.map((o) => startOurs(o.kind)),
    ]);
    // Keep whichever started, so that `finally` stops them when another did not.
    if (llamaStart?.status === "fulfilled") llama = llamaStart.value;
    oursStart.forEach((r, i) => {
      if (r.status === "fulfilled") (ours[i] as Ours).server = r.value;
    });
    for (const r of [llamaStart, ...oursStart]) if (r?.status === "rejected") throw r.reason;
    const llamaServer = llama as LlamaServer;
    llamaArgs = llamaServer.args.map((a) => (a === ggufPath ? VS_MODEL_FILE : a));
    // cpp-httplib serves one connection per thread: more clients than this wait for a thread.
    const threads = /http threads: (\d+)/.exec(llamaServer.output());
    llamaHttpThreads = threads ? Number(threads[1]) : null;
    for (const o of ours) {
      o.target.baseUrl = (o.server as DevServer).url;
      await uploadModel(o.target.baseUrl, bytes);
    }
    const targets: [Target, Tally][] = [
      ...ours.map((o): [Target, Tally] => [o.target, o.tally]),
      [{ name: "llama-server", baseUrl: llamaServer.url, apiKey, model: VS_MODEL_NAME }, theirs],
    ];

    // Warm-up: loads the model onto our NPU, warms the servers' caches and the JITs.
    for (const [t] of targets) {
      const r = await streamOnce(t, PROMPTS[0] as string);
      greedyText[t.name] = r.text;
      promptTokens[t.name] = r.promptTokens;
      await throughput(t, concurrency);
      await shortRequests(t, null, shortWarmupS);
      await healthLatencies(t.baseUrl, 10);
    }

    for (let r = 0; r < rounds; r++) {
      // Each round starts with the next server, so that no server always goes first or last.
      const k = r % targets.length;
      const order = [...targets.slice(k), ...targets.slice(0, k)];
      for (const [t, tally] of order) {
        tally.health.push(
          ...(await healthLatencies(t.baseUrl, healthRequests, (e) => tally.failure("health", e))),
        );
      }
      for (const [t, tally] of order) await singleStreams(t, tally, runs);
      for (let i = 0; i < throughputRuns; i++) {
        for (const [t, tally] of order) await concurrentStreams(t, tally);
      }
      for (const [t, tally] of order) await shortRequests(t, tally, shortDurationS);
      log(
        `round ${r}: ` +
          order
            .map(
              ([t, tally]) =>
                `${t.name} ttft ${tally.ttft.at(-1)?.toFixed(1)} ms, ` +
                `${tally.tps1.at(-1)?.toFixed(0)} / ${tally.tpsN.at(-1)?.toFixed(0)} tok/s, ` +
                `${tally.rps.at(-1)?.toFixed(0)} req/s, /health ${median(tally.health).toFixed(2)} ms`,
            )
            .join("; "),
      );
    }
  } finally {
    await stopAll();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }

  // The pure-compute hops, timed here with all servers stopped.
  const hops = await measureHops(bytes, PROMPTS[0] as string, numTokens, engineRuns);
  const b = summary(theirs);
  const ratio = (x: number, y: number) => round(x / y, 2);
  const ms = (x: number) => round(x, 4);
  /** e2e per token of our single streams, and what is left of it after the timed hops. */
  const perToken = (o: Ours) => {
    const e2e = median(o.tally.e2e) / numTokens;
    const rest = e2e - hops.engineMsPerToken - hops.eventsMsPerToken - hops.sseMsPerToken;
    return { e2e: ms(e2e), npu_to_worker_stream_http_and_scheduling: ms(rest) };
  };
  const results = ours.map((o) => {
    const s = summary(o.tally);
    return { o, summary: s, ratios: ratiosOf(s, b) };
  });
  // `ours` is the direct server's where both ran: the path closer to production.
  const primary = (results.find((x) => x.o.kind === "direct") ?? results[0]) as (typeof results)[0];
  const a = primary.summary;
  const primaryPerToken = perToken(primary.o);
  const oursTexts = ours.map((o) => greedyText[o.target.name]);
  const result = {
    model: VS_MODEL_NAME,
    tokens_per_stream: numTokens,
    concurrency,
    ours_server: SERVER_LABEL[primary.o.kind],
    ours: a,
    ...(both
      ? Object.fromEntries(
          results.flatMap((x) => [
            [`ours_${SERVER_KEY[x.o.kind]}`, x.summary],
            [`ours_${SERVER_KEY[x.o.kind]}_over_llama_server`, x.ratios],
          ]),
        )
      : {}),
    llama_server: { ...b, args: llamaArgs.join(" "), http_threads: llamaHttpThreads },
    ours_over_llama_server: primary.ratios,
    ...(both
      ? {
          direct_over_wrangler_dev: ratiosOf(
            results.find((x) => x.o.kind === "direct")?.summary as Summary,
            results.find((x) => x.o.kind === "wrangler")?.summary as Summary,
          ),
        }
      : {}),
    same_greedy_text: oursTexts.every((t) => t === greedyText["llama-server"]),
    prompt_tokens: promptTokens,
    per_token_ms_1_stream: {
      e2e: primaryPerToken.e2e,
      engine: ms(hops.engineMsPerToken),
      events: ms(hops.eventsMsPerToken),
      sse_framing: ms(hops.sseMsPerToken),
      npu_to_worker_stream_http_and_scheduling:
        primaryPerToken.npu_to_worker_stream_http_and_scheduling,
    },
    ...(both
      ? {
          per_token_ms_1_stream_by_server: Object.fromEntries(
            results.map((x) => [SERVER_KEY[x.o.kind], perToken(x.o)]),
          ),
        }
      : {}),
    per_token_method: {
      e2e: `our 1-stream e2e p50 / ${numTokens} (client: request sent to [DONE])`,
      engine: `in-process Node, same GGUF, wasm kernels, serving defaults: ${numTokens}-token greedy generation (prompt step + decode steps) / ${numTokens}, median of ${hops.engineRuns} runs`,
      events:
        "in-process Node: TaskTracker.onOutput + encodeEvent (Npu) and decodeEvents (worker) on the engine's real outputs, no transport",
      sse_framing:
        "in-process Node: workers/openai/format.ts sseResponseStream on the same events, read to [DONE]",
      npu_to_worker_stream_http_and_scheduling: `e2e minus the three above: DO RPC stream, worker, JobExecutor, ${primary.o.kind === "wrangler" ? "wrangler dev's proxy and" : "Miniflare's"} HTTP, client`,
    },
    engine_decode_step_ms: ms(hops.engineDecodeStepMs),
    rounds,
    runs_per_round: runs,
    throughput_runs_per_round: throughputRuns,
    health_requests_per_round: healthRequests,
    short_requests: {
      clients: shortClients,
      max_tokens: shortTokens,
      duration_s: shortDurationS,
      warmup_s: shortWarmupS,
    },
    log_level: logLevel ?? "wrangler.toml",
    node: process.version,
  };
  log(`model ${VS_MODEL_NAME}, ${numTokens}-token greedy streams, medians of ${rounds} rounds`);
  const cols: [string, Summary][] = [
    ...results.map((x): [string, Summary] => [
      both ? `ours ${SERVER_KEY[x.o.kind]}` : "ours",
      x.summary,
    ]),
    ["llama-server", b],
  ];
  const row = (label: string, f: (x: Summary) => number) =>
    `${label.padEnd(22)}${cols.map(([, x]) => fmt(f(x))).join("")}` +
    results.map((x) => `${ratio(f(x.summary), f(b))}x`.padEnd(8)).join("");
  log(
    `${"".padEnd(22)}${cols.map(([n]) => n.padEnd(18)).join("")}over llama-server\n` +
      `${row("tokens/s 1 stream", (x) => x.tokens_per_s["1"])}\n` +
      `${row(`tokens/s ${concurrency} streams`, (x) => x.tokens_per_s[String(concurrency)] as number)}\n` +
      `${row("short requests/s", (x) => x.short_requests.requests_per_s)}\n` +
      `${row("TTFT p50 ms (1)", (x) => x.ttft_ms.p50)}\n` +
      `${row("GET /health p50 ms", (x) => x.health_ms.p50)}\n` +
      `${"failed requests".padEnd(22)}${cols.map(([, x]) => fmt(sum(x.failed))).join("")}`,
  );
  log("per streamed token at 1 stream (ms):");
  for (const [k, v] of Object.entries(result.per_token_ms_1_stream)) {
    log(`  ${k.padEnd(42)} ${String(v).padStart(8)}  ${result.per_token_method[k as "e2e"]}`);
  }
  console.log(JSON.stringify(result));
}

type Summary = ReturnType<typeof summary>;

/** `a`'s results over `b`'s: throughputs, TTFT and /health latency. */
function ratiosOf(a: Summary, b: Summary) {
  const r = (x: number, y: number) => round(x / y, 2);
  const n = String(concurrency);
  return {
    tokens_per_s_1: r(a.tokens_per_s["1"], b.tokens_per_s["1"]),
    [`tokens_per_s_${n}`]: r(a.tokens_per_s[n] as number, b.tokens_per_s[n] as number),
    requests_per_s: r(a.short_requests.requests_per_s, b.short_requests.requests_per_s),
    ttft_p50: r(a.ttft_ms.p50, b.ttft_ms.p50),
    health_p50: r(a.health_ms.p50, b.health_ms.p50),
  };
}

const fmt = (x: number) => String(x).padEnd(18);
const sum = (o: Record<string, number>) => Object.values(o).reduce((s, x) => s + x, 0);

(llamaServerBinary === undefined ? benchOne() : benchVsLlamaServer(llamaServerBinary)).catch(
  (e: unknown) => {
    console.error(`error: ${(e as Error).message}`);
    process.exitCode = 1;
  },
);
