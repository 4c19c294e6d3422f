/**
 * MoE chaos drills through POST /api/faults (FAULT_INJECTION is on in this suite): while 16 greedy
 * streams run on a moe-attention deployment (2 attention Npus, 4 Expert DOs), one expert rank's
 * step handling hangs, then another is reset (its in-memory experts gone), then a third one's
 * next serve throws (each drill under 16 fresh streams). Attention rank 0's
 * watch finds each well under the 30 s exchange timeout, fails it over (surviving EPLB replicas,
 * or its experts re-loaded on surviving ranks) and the attention ranks replay only the (layer,
 * step) exchange in flight: every stream must end with [DONE] and exactly its no-fault output,
 * on its first task, with no KV block left in use. A deployment with one expert rank has nowhere
 * to fail over: every stream ends with one clear error, fast. At the DO level, with an EPLB map
 * holding a replica of every expert, a hung rank fails over with nothing to load and the tasks'
 * tokens equal a colocated Npu's. Prints one JSON line per drill.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../shared/model/config.ts";
import { primaryMap } from "../../shared/moe/expert-map.ts";
import { MOE_EXCHANGE_TIMEOUT_MS, type MoeGroupSpec } from "../../shared/protocol/moe.ts";
import { expertName, npuName } from "../../shared/protocol/names.ts";
import { Tokenizer } from "../../shared/tokenizer/tokenizer.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import { parseSse } from "../helpers/sse.ts";
import { greedyTask, type NpuTask, tokensOf } from "./npu-tasks.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const PROMPTS = Array.from({ length: 16 }, (_, i) => `Tale ${i}: the little model said`);

interface FailoverView {
  rank: number;
  reason: string;
  detectedAt: number;
  recoveredAt: number | null;
  numReplicated: number;
  numReloaded: number;
  error: string | null;
}

async function record(id: string): Promise<RequestRecord> {
  return (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
}

function streamed(text: string) {
  const events = parseSse(text);
  const errors = events.filter((e) => e !== "[DONE]" && "error" in e) as {
    error: { message: string };
  }[];
  const out = events
    .filter((e): e is { choices: { text: string }[] } => e !== "[DONE]" && "choices" in e)
    .map((e) => e.choices[0]?.text ?? "")
    .join("");
  return { out, done: events.at(-1) === "[DONE]", errors };
}

async function moeDeployment(experts: number): Promise<{ id: string; instanceId: string }> {
  expect((await call("/v1/models")).status).toBe(200); // registers the default model
  const res = await postDeployment({
    model: "lemma-moe",
    mode: "moe-attention",
    instances: { attention: 2, experts },
  });
  expect(res.status).toBe(201);
  const dep = (await res.json()) as { id: string; instances: { id: string }[] };
  return { id: dep.id, instanceId: dep.instances[0]?.id as string };
}

/** Starts the 16 streams, reads each one's first chunk (so all run), and returns their bodies. */
async function startStreams(base: object) {
  return Promise.all(
    PROMPTS.map(async (prompt) => {
      const res = await post("/v1/completions", { ...base, prompt, stream: true });
      expect(res.status).toBe(200);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value, { stream: true });
      const rest = async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return text;
          text += decoder.decode(value, { stream: true });
        }
      };
      return { id: res.headers.get("x-request-id") as string, rest };
    }),
  );
}

async function failovers(depId: string): Promise<{ down: number[]; failovers: FailoverView[] }> {
  return (await (await admin(`/api/deployments/${depId}/experts`)).json()) as {
    down: number[];
    failovers: FailoverView[];
  };
}

async function noBlockInUse(instanceId: string): Promise<void> {
  for (const rank of [0, 1]) {
    const s = await env.NPU.getByName(npuName(instanceId, rank)).stats();
    expect(s.numRunning + s.numWaiting, `attention rank ${rank}`).toBe(0);
    expect(s.numFreeBlocks, `attention rank ${rank}`).toBe(s.numBlocks);
  }
}

describe("MoE chaos drills", () => {
  it("hangs, resets, then throws in one expert rank under 16 streams: each fails over, outputs unchanged", async () => {
    const dep = await moeDeployment(4);
    const base = {
      model: "lemma-moe",
      deployment: dep.id,
      temperature: 0,
      max_tokens: 40,
      ignore_eos: true,
    };
    const expected = await Promise.all(
      PROMPTS.map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt });
        expect(res.status).toBe(200);
        return ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text as string;
      }),
    );
    // EPLB first (a skewed load made replicas of the hot experts), so a failover finds some
    expect((await admin(`/api/deployments/${dep.id}/rebalance`, { method: "POST" })).status).toBe(
      200,
    );
    for (const [n, [rank, fault]] of [
      [1, "hang"],
      [2, "drop_state"],
      [3, "throw"],
    ].entries()) {
      const streams = await startStreams(base);
      const injectedAt = Date.now();
      const f = await post(
        "/api/faults",
        { target: "expert", instance: dep.instanceId, rank, fault },
        "sk-admin",
      );
      expect(f.status).toBe(200);
      const texts = await Promise.all(streams.map((s) => s.rest()));
      const endedAt = Date.now();
      for (const [i, text] of texts.entries()) {
        const s = streamed(text);
        expect(s.errors).toEqual([]);
        expect(s.done).toBe(true);
        expect(s.out).toBe(expected[i]);
      }
      // no migration: every request succeeded on its first (and only) task
      for (const s of streams) {
        let rec: RequestRecord | null = null;
        await vi.waitUntil(
          async () => {
            rec = await record(s.id);
            return rec.status !== "queued" && rec.status !== "running";
          },
          { timeout: 10_000, interval: 50 },
        );
        expect(rec, JSON.stringify(rec)).toMatchObject({ status: "succeeded" });
        expect((rec as unknown as RequestRecord).jobs[0]?.tasks).toHaveLength(1);
      }
      const v = await failovers(dep.id);
      expect(v.failovers).toHaveLength(n + 1);
      const ev = v.failovers[n] as FailoverView;
      expect(ev.rank).toBe(rank);
      expect(ev.error).toBeNull();
      expect(ev.reason).toMatch(
        fault === "hang" ? /hung/ : fault === "throw" ? /failed a step/ : /lost its experts/,
      );
      expect(v.down).toEqual([1, 2, 3].slice(0, n + 1));
      const detectedAfterMs = ev.detectedAt - injectedAt;
      const recoveredAfterMs = (ev.recoveredAt as number) - injectedAt;
      expect(detectedAfterMs).toBeLessThan(MOE_EXCHANGE_TIMEOUT_MS / 3);
      await noBlockInUse(dep.instanceId);
      console.log(
        JSON.stringify({
          drill: `moe_expert_${fault}`,
          numStreams: texts.length,
          numErrors: 0,
          detectedAfterMs,
          recoveredAfterMs,
          failoverMs: recoveredAfterMs - detectedAfterMs,
          numReplicated: ev.numReplicated,
          numReloaded: ev.numReloaded,
          allEndedAfterMs: endedAt - injectedAt,
        }),
      );
    }
    // the deployment still serves the same greedy output on its one remaining expert rank
    const again = await Promise.all(
      PROMPTS.slice(0, 4).map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt });
        return ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text;
      }),
    );
    expect(again).toEqual(expected.slice(0, 4));
    expect((await admin(`/api/deployments/${dep.id}`, { method: "DELETE" })).status).toBe(200);
  });

  it("with one expert rank there is nowhere to fail over: each stream ends with one clear error", async () => {
    const dep = await moeDeployment(1);
    const base = {
      model: "lemma-moe",
      deployment: dep.id,
      temperature: 0,
      max_tokens: 200,
      ignore_eos: true,
    };
    const streams = await startStreams(base);
    const injectedAt = Date.now();
    const f = await post(
      "/api/faults",
      { target: "expert", instance: dep.instanceId, rank: 0, fault: "hang" },
      "sk-admin",
    );
    expect(f.status).toBe(200);
    const texts = await Promise.all(streams.map((s) => s.rest()));
    const endedAfterMs = Date.now() - injectedAt;
    for (const text of texts) {
      const s = streamed(text);
      expect(s.done).toBe(false);
      expect(s.errors).toHaveLength(1);
    }
    const v = await failovers(dep.id);
    expect(v.failovers[0]?.error).toMatch(/expert rank 0 failed .*hung.* could not be failed over/);
    for (const s of streams) {
      await vi.waitUntil(async () => (await record(s.id)).status === "failed", {
        timeout: 10_000,
        interval: 50,
      });
      expect((await record(s.id)).jobs[0]?.tasks[0]?.error).toMatch(/could not be failed over/);
    }
    expect(endedAfterMs).toBeLessThan(MOE_EXCHANGE_TIMEOUT_MS / 3);
    await noBlockInUse(dep.instanceId);
    console.log(
      JSON.stringify({
        drill: "moe_expert_hang_no_failover",
        numStreams: texts.length,
        numErrors: texts.length,
        detectedAfterMs: (v.failovers[0]?.detectedAt as number) - injectedAt,
        allEndedAfterMs: endedAfterMs,
      }),
    );
  });

  it("refuses an expert fault without an instance, or for a rank that is not configured", async () => {
    const bad = await post("/api/faults", { target: "expert", fault: "hang" }, "sk-admin");
    expect(bad.status).toBe(400);
    const none = await post(
      "/api/faults",
      { target: "expert", instance: "inst_nope", rank: 3, fault: "hang" },
      "sk-admin",
    );
    expect(none.status).toBe(404);
  });

  it("DO level: with a replica of every expert, a hung rank fails over with nothing to load", async () => {
    const model = "moe-replicated";
    const r2Key = `models/${model}.gguf`;
    const bytes = new Uint8Array(DEFAULT_MODEL);
    await env.MODELS.put(r2Key, bytes);
    const file = parseGguf(bytes);
    const config = modelConfigFromGguf(file);
    const tok = Tokenizer.fromGguf(file.metadata);
    const task = (id: string, prompt: string) =>
      greedyTask(model, id, tok.encode(prompt), 24, r2Key);
    const tokens = async (npu: Parameters<typeof tokensOf>[0], t: NpuTask) =>
      (await tokensOf(npu, t)).ids;
    const prompts = PROMPTS.slice(0, 8);
    const colocated = env.NPU.getByName(npuName("moe-replicated-ref", 0));
    const want = await Promise.all(prompts.map((p, i) => tokens(colocated, task(`ref${i}`, p))));
    // an EPLB map: every expert on its primary rank and on the next one
    const E = 4;
    const primary = primaryMap(config.numHiddenLayers, config.numExperts, E);
    const spec: MoeGroupSpec = {
      instanceId: "moe-replicated",
      model,
      r2Key,
      numAttention: 2,
      numExperts: E,
      map: {
        version: 2,
        numRanks: E,
        replicas: primary.replicas.map((l) =>
          l.map(([r]) => [r as number, ((r as number) + 1) % E]),
        ),
      },
      timeoutMs: MOE_EXCHANGE_TIMEOUT_MS,
    };
    const experts = Array.from({ length: E }, (_, j) =>
      env.EXPERT.getByName(expertName(spec.instanceId, j)),
    );
    const attention = [0, 1].map((a) => env.NPU.getByName(npuName(spec.instanceId, a)));
    for (const [j, e] of experts.entries()) {
      expect((await e.configure({ spec, rank: j })).ok).toBe(true);
    }
    for (const [a, n] of attention.entries()) {
      expect((await n.attentionConfigure({ spec, rank: a })).ok).toBe(true);
    }
    expect((await experts[1]!.injectFault({ fault: "hang" })).ok).toBe(true);
    const injectedAt = Date.now();
    const got = await Promise.all(prompts.map((p, i) => tokens(attention[0]!, task(`rep${i}`, p))));
    expect(got).toEqual(want);
    const view = await attention[0]!.moeExperts();
    const ev = view?.failovers?.[0];
    expect(ev).toMatchObject({ rank: 1, numReloaded: 0, error: null });
    expect(ev?.reason).toMatch(/hung/);
    expect(view?.down).toEqual([1]);
    // the hung rank's experts were all served by their replicas: nothing was loaded anywhere
    for (const j of [0, 2, 3]) {
      expect((await experts[j]!.stats())?.residentBytes).toBe(
        (await experts[(j + 2) % E]!.stats())?.residentBytes,
      );
    }
    console.log(
      JSON.stringify({
        drill: "moe_expert_hang_replicated",
        numTasks: got.length,
        detectedAfterMs: (ev?.detectedAt as number) - injectedAt,
        failoverMs: (ev?.recoveredAt as number) - (ev?.detectedAt as number),
        numReplicated: ev?.numReplicated,
        numReloaded: ev?.numReloaded,
      }),
    );
  });
});
