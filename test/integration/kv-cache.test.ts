/**
 * `kv_cache` through the API: each policy selectable per request, 400s naming the field, a raas
 * budget smaller than the pinned prompt refused, `usage.kv_cache` reporting evictions and a
 * peak within the budget, a deployment default, and the policy applied on the decode side of a
 * PD deployment after the import.
 *
 * The prompt is a lemma-chain problem for the default model (the RaaS reasoning model): BOS, 73
 * characters and the generation prompt ">" make 75 tokens, 5 pages of 16 tokens that raas pins,
 * so its budget needs at least 6 pages; prompt plus 120 generated tokens (13 pages) stay within
 * the context of 512 and outgrow every budget below.
 */
import { describe, expect, it } from "vitest";
import { lemmaProblem } from "../../shared/eval/lemma-chain.ts";
import { admin, call, postDeployment } from "./worker-client.ts";

const MODEL = "lemma-moe";
const PROMPT = `${lemmaProblem(3, 0).prompt}>`;

interface KvUsage {
  policy: string;
  budget: number;
  resident_pages: number;
  evictions: number;
  peak_kv_bytes: number;
}

async function complete(body: object) {
  const res = await call("/v1/completions", {
    method: "POST",
    body: JSON.stringify({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 120,
      temperature: 0,
      ignore_eos: true,
      ...body,
    }),
  });
  return {
    status: res.status,
    body: (await res.json()) as {
      choices: { text: string }[];
      usage: { completion_tokens: number; kv_cache?: KvUsage };
      error?: { param: string | null; code: string | null; message: string };
    },
  };
}

async function deployment(body: object): Promise<{ id: string }> {
  const res = await postDeployment(body);
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string };
}

describe("kv_cache", () => {
  it("runs every policy and reports usage.kv_cache", async () => {
    const dense = await complete({});
    expect(dense.status).toBe(200);
    expect(dense.body.usage.kv_cache).toBeUndefined();
    for (const policy of ["streamingllm", "h2o", "raas", "raas-nopin", "quest"]) {
      const r = await complete({ kv_cache: { policy, budget: 128 } });
      expect(r.status, policy).toBe(200);
      expect(r.body.usage.completion_tokens).toBe(120);
      const u = r.body.usage.kv_cache as KvUsage;
      expect(u.policy).toBe(policy);
      expect(u.budget).toBe(128);
      if (policy === "quest") {
        expect(u.evictions).toBe(0);
      } else {
        expect(u.evictions, policy).toBeGreaterThan(0);
        expect(u.resident_pages).toBe(8); // 128 tokens in pages of 16
      }
    }
    const raas = (await complete({ kv_cache: { policy: "raas", budget: 128 } })).body.usage
      .kv_cache;
    const quest = (await complete({ kv_cache: { policy: "quest", budget: 128 } })).body.usage
      .kv_cache;
    expect((raas as KvUsage).peak_kv_bytes).toBeLessThan((quest as KvUsage).peak_kv_bytes);
  });

  it("answers 400 naming the field", async () => {
    const cases: [object, string][] = [
      [{ policy: "lru" }, "kv_cache.policy"],
      [{ policy: "raas", page_size: 24 }, "kv_cache.page_size"],
      [{ policy: "h2o", budget: 16 }, "kv_cache.budget"],
      [{ policy: "h2o", recent_share: 2 }, "kv_cache.recent_share"],
      [{ policy: "raas", aggregate: "mean" }, "kv_cache.aggregate"],
      // the prompt's 5 pinned pages and the current page need more than 5 pages of budget
      [{ policy: "raas", budget: 80 }, "kv_cache.budget"],
    ];
    for (const [kv, param] of cases) {
      const r = await complete({ kv_cache: kv });
      expect(r.status, JSON.stringify(kv)).toBe(400);
      expect(r.body.error?.param).toBe(param);
    }
  });

  it("applies a deployment's default, and runs on the decode side of a PD deployment", async () => {
    const d = await deployment({
      model: MODEL,
      mode: "colocated",
      instances: { colocated: 1 },
      kv_cache: { policy: "streamingllm", budget: 48 },
    });
    const r = await complete({ deployment: d.id });
    expect(r.status).toBe(200);
    expect(r.body.usage.kv_cache?.policy).toBe("streamingllm");
    expect(r.body.usage.kv_cache?.resident_pages).toBe(3);
    const bad = await postDeployment({
      model: MODEL,
      mode: "colocated",
      instances: { colocated: 1 },
      kv_cache: { page_size: 20 },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe(
      "kv_cache.page_size",
    );

    const pd = await deployment({ model: MODEL, mode: "pd", instances: { prefill: 1, decode: 1 } });
    const colo = await complete({ kv_cache: { policy: "raas", budget: 112 } });
    const split = await complete({ deployment: pd.id, kv_cache: { policy: "raas", budget: 112 } });
    expect(split.status).toBe(200);
    expect(split.body.usage.kv_cache?.evictions).toBeGreaterThan(0);
    expect(split.body.usage.kv_cache?.resident_pages).toBe(7);
    expect(split.body.choices[0]?.text).toBe(colo.body.choices[0]?.text);
    for (const id of [d.id, pd.id]) await admin(`/api/deployments/${id}`, { method: "DELETE" });
  });
});
