/**
 * GET /metrics end to end (wrangler dev, two JobExecutor shards): the text parses with a real
 * Prometheus parser from npm, and after two completions the counters and histograms moved by
 * exactly what was sent; only the admin key and METRICS_KEY open it.
 */
import parsePrometheus, { type ParsedFamily } from "parse-prometheus-text-format";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { ADMIN_KEY, type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";
import { parseSse } from "../helpers/sse.ts";

const METRICS_KEY = "sk-metrics-scraper";
const MODEL = "lemma-moe";

let server: DevServer;

beforeAll(async () => {
  server = await startDevServer({ JOB_EXECUTOR_SHARDS: "2", METRICS_KEY });
});

afterAll(async () => {
  await server?.stop();
});

function scrape(key?: string): Promise<Response> {
  return fetch(`${server.url}/metrics`, {
    headers: key === undefined ? {} : { authorization: `Bearer ${key}` },
  });
}

async function families(): Promise<ParsedFamily[]> {
  const res = await scrape(ADMIN_KEY);
  expect(res.status).toBe(200);
  return parsePrometheus(await res.text());
}

/** The sum of a counter's or gauge's samples whose labels include `where`. */
function total(fs: ParsedFamily[], name: string, where: Record<string, string> = {}): number {
  const f = fs.find((x) => x.name === name);
  return (f?.metrics ?? [])
    .filter((m) => Object.entries(where).every(([k, v]) => m.labels?.[k] === v))
    .reduce((a, m) => a + Number(m.value ?? 0), 0);
}

/**
 * A histogram's observation count, from its +Inf bucket. NOTE: parse-prometheus-text-format
 * 1.1.1 keeps only `le` of bucket lines and drops _sum/_count lines that have labels, so with one
 * model the +Inf bucket is the count; the test's own line lookup checks _count agrees.
 */
function histogramCount(fs: ParsedFamily[], name: string): number {
  const f = fs.find((x) => x.name === name);
  expect(f?.type).toBe("HISTOGRAM");
  return Number(f?.metrics[0]?.buckets?.["+Inf"] ?? 0);
}

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

async function complete(): Promise<Usage> {
  const res = await fetch(`${server.url}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      prompt: "Once upon a time",
      max_tokens: 8,
      ignore_eos: true,
    }),
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { usage: Usage }).usage;
}

async function chatStreamed(): Promise<Usage> {
  const res = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: MODEL,
      messages: [{ role: "user", content: "Tell me a story." }],
      max_tokens: 12,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  expect(res.status).toBe(200);
  const frames = parseSse(await res.text()) as ({ usage: Usage | null } | string)[];
  const last = frames.at(-2);
  if (typeof last !== "object" || !last?.usage) throw new Error("no usage chunk");
  return last.usage;
}

describe("GET /metrics", () => {
  it("needs the admin key or METRICS_KEY: 401 in the OpenAI envelope otherwise", async () => {
    for (const key of [undefined, LOCAL_KEY, "sk-wrong"]) {
      const res = await scrape(key);
      expect(res.status).toBe(401);
      const body = (await res.json()) as { error: { type: string; message: string } };
      expect(body.error.message).toMatch(/metrics/i);
    }
    for (const key of [ADMIN_KEY, METRICS_KEY]) {
      const res = await scrape(key);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
      await res.text();
    }
  });

  it("moves the counters and histograms by exactly what two requests did", async () => {
    const before = await families();
    const usages = [await complete(), await chatStreamed()];
    const requests = (fs: ParsedFamily[]) =>
      total(fs, "flowserve:requests_total", { model: MODEL, status: "succeeded" });
    // the final task reports reach the JobExecutors just after the responses end
    const after = await vi.waitUntil(
      async () => {
        const fs = await families();
        return requests(fs) - requests(before) >= 2 ? fs : false;
      },
      { timeout: 15_000, interval: 100 },
    );
    const delta = (name: string, where: Record<string, string> = {}) =>
      total(after, name, where) - total(before, name, where);
    const sum = (k: keyof Usage) => usages.reduce((a, u) => a + u[k], 0);

    expect(requests(after) - requests(before)).toBe(2);
    expect(delta("flowserve:requests_total", { kind: "text_completion" })).toBe(1);
    expect(delta("flowserve:requests_total", { kind: "chat.completion" })).toBe(1);
    expect(delta("flowserve:generation_tokens_total", { model: MODEL })).toBe(
      sum("completion_tokens"),
    );
    expect(delta("flowserve:prompt_tokens_total", { model: MODEL })).toBe(sum("prompt_tokens"));
    expect(delta("flowserve:prefix_cache_queries_total", { model: MODEL })).toBe(
      sum("prompt_tokens"),
    );
    expect(delta("flowserve:scheduler_decisions_total", { model: MODEL })).toBe(2);
    for (const h of [
      "flowserve:time_to_first_token_seconds",
      "flowserve:time_per_output_token_seconds",
      "flowserve:e2e_request_latency_seconds",
    ]) {
      expect(histogramCount(after, h) - histogramCount(before, h)).toBe(2);
    }
    const text = await (await scrape(METRICS_KEY)).text();
    const count = /^flowserve:e2e_request_latency_seconds_count\{model="lemma-moe"\} (\d+)$/m.exec(
      text,
    );
    expect(Number(count?.[1])).toBe(histogramCount(after, "flowserve:e2e_request_latency_seconds"));
    // the instance pushed its load with its reports: one gauge per instance, all finished now
    const kv = after.find((f) => f.name === "flowserve:kv_cache_usage_perc");
    expect(kv?.metrics.length).toBeGreaterThan(0);
    for (const m of kv?.metrics ?? []) expect(Number(m.value)).toBeGreaterThanOrEqual(0);
    expect(total(after, "flowserve:num_requests_running")).toBe(0);
  });
});
