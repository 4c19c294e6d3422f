/**
 * Seeded fuzz of the API: 1,200 malformed or hostile requests (wrong types, NaN and Infinity as
 * raw JSON, huge numbers, deep nesting, invalid UTF-8, oversize bodies, truncated JSON, unknown
 * ids, bad Idempotency-Keys, bad or missing API keys) across the routes. No answer may be a 5xx,
 * every error must be OpenAI's envelope, and a greedy completion afterwards must equal the one
 * before. Isolation: tenant "other" can neither read nor cancel tenant "local"'s requests.
 * Against `wrangler dev` (real HTTP): in the workerd pool each request through the test harness
 * gets slower the more a file has sent (about 70 ms -> 280 ms over 600), which 1,200 cannot afford.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mulberry32 } from "../../shared/random.ts";
import { ADMIN_KEY, type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";

const OTHER_KEY = "sk-other-tenant";
let server: DevServer;

beforeAll(async () => {
  server = await startDevServer({
    API_KEYS: `local:${LOCAL_KEY},other:${OTHER_KEY}`,
    FAULT_INJECTION: "true",
  });
});

afterAll(async () => {
  await server?.stop();
});

function call(
  path: string,
  init: RequestInit = {},
  key = LOCAL_KEY,
  extra: Record<string, string> = {},
) {
  return fetch(`${server.url}${path}`, {
    ...init,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json", ...extra },
  });
}

const post = (path: string, body: object, key?: string) =>
  call(path, { method: "POST", body: JSON.stringify(body) }, key);

const NUM_REQUESTS = 1200;
const SEED = 20261130;

type Rng = () => number;
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)] as T;

/** Raw JSON texts of hostile values (NaN and Infinity are not JSON: the text itself is bad). */
const HOSTILE_VALUES = [
  "NaN",
  "Infinity",
  "-Infinity",
  "1e999",
  "-1",
  "0",
  "-0",
  "0.5",
  "9007199254740993",
  "1e308",
  '"12"',
  '""',
  "true",
  "null",
  "[]",
  "{}",
  '{"__proto__": {"admin": true}}',
  '"\\ud800"',
  `"${"x".repeat(70_000)}"`,
  `${"[".repeat(5_000)}${"]".repeat(5_000)}`,
  `${'{"a":'.repeat(3_000)}1${"}".repeat(3_000)}`,
  '[{"role": "user", "content": {"type": "image_url"}}]',
  '[{"role": "tool"}]',
];

const FIELDS = [
  "model",
  "messages",
  "prompt",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "top_k",
  "n",
  "seed",
  "stop",
  "stream",
  "stream_options",
  "logprobs",
  "top_logprobs",
  "cache_salt",
  "deployment",
  "context_cache",
  "kind",
  "requests",
  "ttl_seconds",
  "mode",
  "instances",
  "target",
  "fault",
  "__proto__",
  "constructor",
];

const POST_ROUTES = [
  "/v1/chat/completions",
  "/v1/completions",
  "/api/requests",
  "/api/context-caches",
  "/api/deployments",
  "/api/faults",
];

/** A valid body for the route, as a field -> raw JSON map. */
function baseFields(route: string): Record<string, string> {
  if (route === "/v1/chat/completions")
    return {
      model: '"lemma-moe"',
      messages: '[{"role":"user","content":"Hi"}]',
      max_tokens: "2",
    };
  if (route === "/api/requests")
    return {
      kind: '"batch"',
      model: '"lemma-moe"',
      requests: '[{"prompt":"Hi","max_tokens":1}]',
    };
  if (route === "/api/context-caches")
    return { model: '"lemma-moe"', prompt: '"Hi"', ttl_seconds: "5" };
  if (route === "/api/deployments")
    // an unknown model: a body that stays valid gets a 404 instead of starting instances
    return { model: '"no-such-model"', mode: '"colocated"', instances: '{"colocated":1}' };
  if (route === "/api/faults") return { target: '"npu"', fault: '"throw"' };
  return { model: '"lemma-moe"', prompt: '"Hi"', max_tokens: "2" };
}

function randomHex(rng: Rng, n: number): string {
  return Array.from({ length: n }, () => Math.floor(rng() * 16).toString(16)).join("");
}

interface FuzzCase {
  path: string;
  method: string;
  body: BodyInit | null;
  headers: Record<string, string>;
  key: string;
}

function fuzzCase(rng: Rng): FuzzCase {
  const r = rng();
  const key =
    rng() < 0.05
      ? pick(rng, ["", "sk-wrong", `${LOCAL_KEY} ${LOCAL_KEY}`])
      : rng() < 0.2
        ? ADMIN_KEY
        : LOCAL_KEY;
  const headers: Record<string, string> = {};
  if (rng() < 0.1)
    headers["idempotency-key"] = pick(rng, [
      "",
      "k".repeat(300),
      "tab\tkey",
      `k-${randomHex(rng, 6)}`,
    ]);
  if (r < 0.15) {
    // unknown or malformed ids
    const id = pick(rng, [
      `req_${randomHex(rng, 32)}`,
      `ctx_${randomHex(rng, 32)}`,
      "../../etc",
      "%00",
      "req_",
      "x".repeat(500),
    ]);
    const path = pick(rng, [
      "/api/requests/",
      "/api/context-caches/",
      "/api/admin/requests/",
      "/v1/models/",
      "/api/deployments/",
    ]);
    return {
      path: path + encodeURIComponent(id),
      method: pick(rng, ["GET", "DELETE"]),
      body: null,
      headers,
      key,
    };
  }
  const path = pick(rng, POST_ROUTES);
  if (r < 0.22) {
    // invalid UTF-8, truncated JSON, a body past 4 MiB, or no body
    const kind = Math.floor(rng() * 4);
    const body =
      kind === 0
        ? new Uint8Array([0x7b, 0x22, 0x6d, 0xff, 0xfe, 0xc3, 0x28, 0x22, 0x7d])
        : kind === 1
          ? `{"model": "lemma-moe", "prompt": "Hi`
          : kind === 2
            ? new Uint8Array(4 * 2 ** 20 + 1 + Math.floor(rng() * 1000)).fill(0x20)
            : null;
    return { path, method: "POST", body, headers, key };
  }
  const fields = baseFields(path);
  const numMutations = 1 + Math.floor(rng() * 3);
  for (let i = 0; i < numMutations; i++) {
    const f = pick(rng, FIELDS);
    // (max_tokens stays: without it a request that happens to be valid generates to the context end)
    if (rng() < 0.15 && f !== "max_tokens") delete fields[f];
    else fields[f] = pick(rng, HOSTILE_VALUES);
  }
  const json = `{${Object.entries(fields)
    .map(([k, v]) => `${JSON.stringify(k)}: ${v}`)
    .join(", ")}}`;
  const body = rng() < 0.1 ? `[${json}]` : json;
  return { path, method: "POST", body, headers, key };
}

async function send(c: FuzzCase): Promise<Response> {
  return call(c.path, { method: c.method, body: c.body }, c.key, c.headers);
}

async function greedy(): Promise<string> {
  const res = await post("/v1/completions", {
    model: "lemma-moe",
    prompt: "The little fox",
    max_tokens: 12,
    temperature: 0,
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text as string;
}

describe("fuzz", () => {
  it(`answers ${NUM_REQUESTS} hostile requests without a 5xx, and serves correctly afterwards`, async () => {
    const before = await greedy();
    const rng = mulberry32(SEED);
    const cases = Array.from({ length: NUM_REQUESTS }, () => fuzzCase(rng));
    const statuses = new Map<number, number>();
    for (let i = 0; i < cases.length; i += 8) {
      await Promise.all(
        cases.slice(i, i + 8).map(async (c, j) => {
          const res = await send(c);
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const where = `case ${i + j}: ${c.method} ${c.path} -> ${res.status}`;
          expect(res.status, where).toBeLessThan(500);
          if (res.status >= 400) {
            const body = (await res.json()) as { error?: Record<string, unknown> };
            expect(Object.keys(body.error ?? {}).sort(), where).toEqual([
              "code",
              "message",
              "param",
              "type",
            ]);
          } else {
            await res.body?.cancel();
          }
        }),
      );
    }
    // mostly refusals, some accepted
    expect([...statuses.keys()].some((s) => s >= 400)).toBe(true);
    expect(await greedy()).toBe(before);
    console.log(JSON.stringify({ fuzz: NUM_REQUESTS, statuses: Object.fromEntries(statuses) }));
  }, 180_000);

  it("keeps tenants apart: another tenant can neither read nor cancel a request", async () => {
    const res = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 2,
    });
    const id = res.headers.get("x-request-id") as string;
    await res.text();
    expect((await call(`/api/requests/${id}`, {}, OTHER_KEY)).status).toBe(404);
    expect((await call(`/api/requests/${id}`, { method: "DELETE" }, OTHER_KEY)).status).toBe(404);
    expect((await call(`/api/requests/${id}`)).status).toBe(200);
  });
});
