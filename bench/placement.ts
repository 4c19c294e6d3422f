/**
 * Placement cost against the number of instances: the latency of a one-token, non-streamed
 * completion (the whole request path: auth, JobExecutor planning and records, dispatch, one
 * engine step) when the model's active deployments hold 1, 8 and 32 colocated instances. The
 * JobExecutor places with the load the instances pushed with their task reports, so the cost
 * must not grow with the instance count (it used to make one stats RPC per instance).
 * Requests run one at a time with distinct prompts (no prefix reuse), so every placement
 * scores every instance. Starts its own `wrangler dev`.
 *
 *   npm run -s bench:placement -- --json [--requests N]
 *
 * Prints one JSON object on its last line.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { ADMIN_KEY, LOCAL_KEY, startDevServer } from "../test/helpers/dev-server.ts";

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "60" },
    model: { type: "string", default: "../shared/models/stories260K-f32.gguf" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});
const numRequests = Number(values.requests);
const MODEL = "placement-bench";
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))] as number;

async function main(): Promise<void> {
  const server = await startDevServer();
  const call = async (path: string, init: RequestInit & { admin?: boolean } = {}) => {
    const res = await fetch(`${server.url}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${init.admin ? ADMIN_KEY : LOCAL_KEY}`,
        "content-type": "application/json",
        ...(init.headers ?? {}),
      },
    });
    if (!res.ok)
      throw new Error(`${init.method ?? "GET"} ${path}: ${res.status} ${await res.text()}`);
    return res.json() as Promise<Record<string, unknown>>;
  };
  try {
    await call(`/api/models/${MODEL}`, {
      method: "PUT",
      admin: true,
      body: readFileSync(values.model as string),
    });
    const list = async () =>
      ((await call("/api/deployments", { admin: true })).data as { id: string; model: string }[])
        .filter((d) => d.model === MODEL)
        .map((d) => d.id);
    const create = async (n: number) =>
      (
        await call("/api/deployments", {
          method: "POST",
          admin: true,
          body: JSON.stringify({ model: MODEL, mode: "colocated", instances: { colocated: n } }),
        })
      ).id as string;
    const retire = async (ids: string[]) => {
      for (const id of ids) await call(`/api/deployments/${id}`, { method: "DELETE", admin: true });
    };
    let prompt = 0;
    const once = async () => {
      const t0 = performance.now();
      // distinct token-id prompts of 40 tokens: no shared full KV block between requests
      const ids = Array.from({ length: 40 }, (_, i) => ((prompt * 41 + i * 7) % 500) + 3);
      prompt++;
      await call("/v1/completions", {
        method: "POST",
        body: JSON.stringify({ model: MODEL, prompt: ids, max_tokens: 1, temperature: 0 }),
      });
      return performance.now() - t0;
    };
    const rows: { instances: number; p50_ms: number; p90_ms: number }[] = [];
    const measure = async (instances: number) => {
      for (let i = 0; i < 10; i++) await once(); // warm-up (loads the chosen instance)
      const ms: number[] = [];
      for (let i = 0; i < numRequests; i++) ms.push(await once());
      const row = {
        instances,
        p50_ms: Number(median(ms).toFixed(2)),
        p90_ms: Number(quantile(ms, 0.9).toFixed(2)),
      };
      rows.push(row);
      if (!values.json)
        console.log(`${instances} instances: p50 ${row.p50_ms} ms, p90 ${row.p90_ms} ms`);
    };
    await measure(1); // the deployment every model gets on upload
    let old = await list();
    await create(8);
    await retire(old);
    await measure(8);
    old = await list();
    await create(16);
    await create(16);
    await retire(old);
    await measure(32);
    const base = rows[0]?.p50_ms ?? 1;
    console.log(
      JSON.stringify({
        metric: "one-token completion latency by instance count",
        requests: numRequests,
        rows,
        p50_32_over_1: Number(((rows[2]?.p50_ms ?? 0) / base).toFixed(2)),
      }),
    );
  } finally {
    await server.stop();
  }
}

main().catch((e: unknown) => {
  console.error(`error: ${(e as Error).message}`);
  process.exitCode = 1;
});
