/**
 * Measures the PD heatmap DeepFlow's scheduler uses (Algorithm 1): completion time of requests
 * served colocated vs PD-disaggregated, per (input length, output length) bucket, on this
 * deployment. Creates one colocated and one PD deployment of the model, times pinned requests
 * (token-id prompts of exact length, `ignore_eos` so every output has its bucket's length,
 * median of --runs), prints the profile as JSON on the last line and stores it on the model
 * (`PUT /api/models/:name/pd-profile`) unless --no-upload.
 *
 *   npm run -s profile:pd -- [--base-url URL] [--model NAME] [--model-file PATH] [--runs N] --json
 *
 * Without --base-url it starts its own `wrangler dev`. Locally every DO shares one thread, so PD
 * pays its KV transfer without any parallel gain: expect colocated to win here.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { PdProfile } from "../shared/serving/pd-profile.ts";
import { ADMIN_KEY, LOCAL_KEY, startDevServer } from "../test/helpers/dev-server.ts";

const { values } = parseArgs({
  options: {
    "base-url": { type: "string" },
    model: { type: "string", default: "lemma-moe" },
    "model-file": { type: "string" },
    "api-key": { type: "string", default: LOCAL_KEY },
    "admin-key": { type: "string", default: ADMIN_KEY },
    runs: { type: "string", default: "3" },
    ctx: { type: "string" },
    "no-upload": { type: "boolean", default: false },
    json: { type: "boolean", default: false },
  },
});

const server = values["base-url"] ? null : await startDevServer();
const base = values["base-url"] ?? (server?.url as string);
const model = values.model as string;
const runs = Number(values.runs);

async function api(path: string, init: RequestInit & { admin?: boolean } = {}): Promise<Response> {
  const key = init.admin ? values["admin-key"] : values["api-key"];
  return fetch(`${base}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      ...init.headers,
    },
  });
}

async function json<T>(res: Response): Promise<T> {
  if (!res.ok) throw new Error(`${res.status}: ${await res.text()}`);
  return (await res.json()) as T;
}

try {
  if (values["model-file"]) {
    const bytes = readFileSync(values["model-file"]);
    await json(await api(`/api/models/${model}`, { method: "PUT", body: bytes, admin: true }));
  }
  const models = await json<{
    data: { name: string; summary: { contextLength: number; vocabSize: number } }[];
  }>(await api("/api/models", { admin: true }));
  const info = models.data.find((m) => m.name === model);
  if (!info) throw new Error(`model ${model} is not registered`);
  const ctx = Number(values.ctx ?? info.summary.contextLength);
  const vocab = info.summary.vocabSize;
  const colocated = await json<{ id: string }>(
    await api("/api/deployments", {
      method: "POST",
      admin: true,
      body: JSON.stringify({ model, mode: "colocated", instances: { colocated: 1 } }),
    }),
  );
  const pd = await json<{ id: string }>(
    await api("/api/deployments", {
      method: "POST",
      admin: true,
      body: JSON.stringify({ model, mode: "pd", instances: { prefill: 1, decode: 1 } }),
    }),
  );
  const inputBuckets = [16, 64, 256, 1024].filter((n) => n < ctx / 2);
  const outputBuckets = [8, 32, 128].filter((n) => n < ctx / 4);
  const time = async (
    deployment: string,
    input: number,
    output: number,
    salt: number,
  ): Promise<number> => {
    // distinct prompts per run, so the prefix cache does not hide the prefill cost
    const prompt = Array.from(
      { length: input },
      (_, i) => 3 + ((i * 7 + salt * 131) % (vocab - 3)),
    );
    const t0 = performance.now();
    await json(
      await api("/v1/completions", {
        method: "POST",
        body: JSON.stringify({
          model,
          deployment,
          prompt,
          max_tokens: output,
          ignore_eos: true,
          temperature: 0,
        }),
      }),
    );
    return performance.now() - t0;
  };
  const median = (xs: number[]) =>
    [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const grid = async (deployment: string, seed: number) => {
    const out: number[][] = [];
    for (const [i, input] of inputBuckets.entries()) {
      const row: number[] = [];
      for (const [j, output] of outputBuckets.entries()) {
        await time(deployment, input, output, seed * 1000 + i * 10 + j + 999); // warm-up
        const xs: number[] = [];
        for (let r = 0; r < runs; r++)
          xs.push(await time(deployment, input, output, seed * 1000 + i * 100 + j * 10 + r));
        row.push(+median(xs).toFixed(2));
      }
      out.push(row);
    }
    return out;
  };
  const profile: PdProfile = {
    model,
    measuredAt: Date.now(),
    inputBuckets,
    outputBuckets,
    colocatedMs: await grid(colocated.id, 1),
    pdMs: await grid(pd.id, 2),
  };
  if (!values["no-upload"]) {
    await json(
      await api(`/api/models/${model}/pd-profile`, {
        method: "PUT",
        admin: true,
        body: JSON.stringify(profile),
      }),
    );
  }
  // the profiling deployments are not left serving traffic
  for (const id of [colocated.id, pd.id])
    await api(`/api/deployments/${id}`, { method: "DELETE", admin: true });
  if (!values.json) {
    for (const [i, input] of inputBuckets.entries()) {
      const cells = outputBuckets.map(
        (o, j) => `${o}: ${profile.colocatedMs[i]?.[j]} / ${profile.pdMs[i]?.[j]} ms`,
      );
      console.log(`input ${input}: ${cells.join(", ")}  (colocated / pd)`);
    }
  }
  console.log(JSON.stringify(profile));
} finally {
  await server?.stop();
}
