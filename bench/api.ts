/**
 * Serving benchmark through the OpenAI API (plain fetch and SSE parsing, no SDK): time to first
 * token and end-to-end time of one 64-token stream (median of several runs after a warm-up), and
 * total tokens/s of 1 and of 16 concurrent 64-token streams (median of several runs). Greedy with
 * `ignore_eos`, so every stream produces all its tokens. Without --base-url it starts its own
 * `wrangler dev` (the local development keys) and stops it at the end.
 *
 *   npm run -s bench:api -- --json [--base-url URL] [--model NAME] [--api-key KEY]
 *                                  [--runs N] [--throughput-runs N] [--tokens N]
 *
 * Prints one JSON object on its last line.
 */
import { parseArgs } from "node:util";
import { type DevServer, LOCAL_KEY, startDevServer } from "../test/helpers/dev-server.ts";

const { values } = parseArgs({
  options: {
    "base-url": { type: "string" },
    model: { type: "string", default: "default-moe" },
    "api-key": { type: "string" },
    runs: { type: "string", default: "5" },
    "throughput-runs": { type: "string", default: "3" },
    tokens: { type: "string", default: "64" },
    concurrency: { type: "string", default: "16" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});

function positiveInt(name: string, v: string | undefined): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`error: --${name} must be a positive integer, got "${v}"`);
    process.exit(1);
  }
  return n;
}

const model = values.model as string;
const runs = positiveInt("runs", values.runs);
const throughputRuns = positiveInt("throughput-runs", values["throughput-runs"]);
const numTokens = positiveInt("tokens", values.tokens);
const concurrency = positiveInt("concurrency", values.concurrency);
const apiKey = values["api-key"] ?? process.env.FLOWSERVE_API_KEY ?? LOCAL_KEY;
const PROMPTS = ["Once upon a time", "Lily wanted", "The dog", "One day, a little", "Tom and Sue"];

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};
const round = (x: number, digits = 1) => Number(x.toFixed(digits));

interface StreamTiming {
  ttftMs: number;
  e2eMs: number;
  completionTokens: number;
}

/** One streamed completion; times from sending the request to the first text and to [DONE]. */
async function streamOnce(baseUrl: string, prompt: string): Promise<StreamTiming> {
  const t0 = performance.now();
  const res = await fetch(`${baseUrl}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model,
      prompt,
      max_tokens: numTokens,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  if (res.status !== 200 || !res.body) {
    throw new Error(`POST /v1/completions: ${res.status} ${await res.text()}`);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let ttftMs = -1;
  let completionTokens = -1;
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
        choices: { text: string }[];
        usage: { completion_tokens: number } | null;
      };
      if (chunk.error) throw new Error(`stream error: ${chunk.error.message}`);
      if (ttftMs < 0 && chunk.choices.some((c) => c.text.length > 0)) {
        ttftMs = performance.now() - t0;
      }
      if (chunk.usage) completionTokens = chunk.usage.completion_tokens;
    }
  }
  const e2eMs = performance.now() - t0;
  if (!done) throw new Error("the stream ended without [DONE]");
  if (ttftMs < 0 || completionTokens < 0) throw new Error("the stream had no text or no usage");
  return { ttftMs, e2eMs, completionTokens };
}

/** Total completion tokens per second of `n` concurrent streams. */
async function throughput(baseUrl: string, n: number): Promise<number> {
  const t0 = performance.now();
  const all = await Promise.all(
    Array.from({ length: n }, (_, i) => streamOnce(baseUrl, PROMPTS[i % PROMPTS.length] as string)),
  );
  const s = (performance.now() - t0) / 1000;
  return all.reduce((sum, r) => sum + r.completionTokens, 0) / s;
}

async function main(): Promise<void> {
  let server: DevServer | null = null;
  let baseUrl = values["base-url"]?.replace(/\/+$/, "");
  const external = baseUrl !== undefined;
  try {
    if (!baseUrl) {
      server = await startDevServer();
      baseUrl = server.url;
    }
    const log = (msg: string) => {
      if (!values.json) console.log(msg);
    };

    // Warm-up: loads the model onto its NPU and warms the JIT.
    await streamOnce(baseUrl, PROMPTS[0] as string);
    await throughput(baseUrl, concurrency);

    const ttft: number[] = [];
    const e2e: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await streamOnce(baseUrl, PROMPTS[i % PROMPTS.length] as string);
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
      tps1.push(await throughput(baseUrl, 1));
      tpsN.push(await throughput(baseUrl, concurrency));
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
      model,
      base_url_kind: external ? "external" : "wrangler dev",
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

main().catch((e: unknown) => {
  console.error(`error: ${(e as Error).message}`);
  process.exitCode = 1;
});
