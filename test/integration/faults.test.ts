/**
 * Fault drills through POST /api/faults (FAULT_INJECTION is on in this suite): while 16 greedy
 * streams and one seeded sampled stream run on a two-instance deployment, one Npu's engine loop
 * hangs. The watchdog finds it, and every stream on it migrates to the other instance
 * (shared/serving/migration.ts): every stream must end with [DONE] and exactly its no-fault
 * output (the sampled one too: its draws are keyed by seed, choice and position), every record
 * must succeed, with no KV block left in use, and the deployment must serve again. Also: an
 * Npu that drops its state (a memory-limit reset) has its task migrate; one with no other
 * instance to go to ends with one error; the control-plane objects keep their records across a
 * reset; an injected JobExecutor throw is one 500; the route is admin-only.
 */
import { runDurableObjectAlarm } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { npuName } from "../../shared/protocol/names.ts";
import { HUNG_AFTER_MS, LOST_AFTER_MS } from "../../shared/serving/watchdog.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import { parseSse } from "../helpers/sse.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const MODEL = "chaos";

async function fault(body: object, key = "sk-admin"): Promise<Response> {
  return call("/api/faults", { method: "POST", body: JSON.stringify(body) }, key);
}

async function record(id: string): Promise<RequestRecord> {
  return (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
}

async function ended(id: string, timeoutMs: number): Promise<RequestRecord> {
  let rec: RequestRecord | null = null;
  await vi.waitUntil(
    async () => {
      rec = await record(id);
      return rec.status !== "queued" && rec.status !== "running";
    },
    { timeout: timeoutMs, interval: 50 },
  );
  return rec as unknown as RequestRecord;
}

/**
 * Reads the first chunk of a completion stream (so its task is running) and returns `rest`, which
 * reads on to the end and gives the whole stream's text.
 */
async function startStream(res: Response): Promise<{ rest: () => Promise<string> }> {
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = decoder.decode((await reader.read()).value, { stream: true });
  return {
    rest: async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text;
        text += decoder.decode(value, { stream: true });
      }
    },
  };
}

/** The text of a completion stream, whether it ended with [DONE], and its error frames. */
function streamed(text: string) {
  const events = parseSse(text);
  const errors = events.filter((e) => e !== "[DONE]" && "error" in e);
  const out = events
    .filter((e): e is { choices: { text: string }[] } => e !== "[DONE]" && "choices" in e)
    .map((e) => e.choices[0]?.text ?? "")
    .join("");
  return { out, done: events.at(-1) === "[DONE]", errors };
}

const prompts = Array.from({ length: 16 }, (_, i) => `Story ${i}: once upon a time, a cat`);

/** The two-instance deployment of the first drill. */
let chaosDeployment = "";

describe("fault drills", () => {
  it("hangs one Npu under 17 streams: each migrates and ends equal to its no-fault output", async () => {
    expect(
      (await admin(`/api/models/${MODEL}`, { method: "PUT", body: DEFAULT_MODEL })).status,
    ).toBe(201);
    const dep = (await (
      await postDeployment({
        model: MODEL,
        mode: "colocated",
        instances: { colocated: 2 },
        min_instances: 2,
      })
    ).json()) as { id: string; instances: { id: string }[] };
    chaosDeployment = dep.id;
    const base = {
      model: MODEL,
      deployment: dep.id,
      temperature: 0,
      max_tokens: 48,
      ignore_eos: true,
    };
    // the no-fault greedy outputs
    const expected = await Promise.all(
      prompts.map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt });
        expect(res.status).toBe(200);
        return ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text as string;
      }),
    );
    // a seeded sampled request: its no-fault output, then the same request streamed
    const sampled = { ...base, temperature: 0.9, top_p: 0.95, seed: 4242, max_tokens: 64 };
    const sampledPrompt = "Once upon a time, a dog";
    const sampledRes = await post("/v1/completions", { ...sampled, prompt: sampledPrompt });
    const sampledExpected = ((await sampledRes.json()) as { choices: { text: string }[] })
      .choices[0]?.text as string;
    expected.push(sampledExpected);
    const streams = await Promise.all([
      ...prompts.map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt, stream: true });
        expect(res.status).toBe(200);
        return { id: res.headers.get("x-request-id") as string, res };
      }),
      (async () => {
        const res = await post("/v1/completions", {
          ...sampled,
          prompt: sampledPrompt,
          stream: true,
        });
        expect(res.status).toBe(200);
        return { id: res.headers.get("x-request-id") as string, res };
      })(),
    ]);
    // the sampled stream's instance hangs, so it migrates
    const sampledId = streams.at(-1)?.id as string;
    const victim = (await record(sampledId)).jobs[0]?.tasks[0]?.instanceId as string;
    const injectedAt = Date.now();
    expect((await fault({ target: "npu", instance: victim, fault: "hang" })).status).toBe(200);

    const texts = await Promise.all(streams.map((s) => s.res.text()));
    const records = await Promise.all(streams.map((s) => ended(s.id, HUNG_AFTER_MS + 15_000)));
    const migrated: RequestRecord[] = [];
    for (const [i, text] of texts.entries()) {
      const s = streamed(text);
      const rec = records[i] as RequestRecord;
      expect(s.errors).toEqual([]);
      expect(s.done).toBe(true);
      expect(s.out).toBe(expected[i]);
      expect(rec.status).toBe("succeeded");
      const tasks = rec.jobs[0]?.tasks ?? [];
      if (tasks.length > 1) {
        migrated.push(rec);
        expect(tasks[0]?.instanceId).toBe(victim);
        expect(tasks[0]?.status).toBe("failed");
        expect(tasks[0]?.error).toMatch(/hung/);
        expect(tasks.at(-1)?.instanceId).not.toBe(victim);
        expect(tasks.at(-1)?.status).toBe("succeeded");
      }
    }
    expect(migrated.map((r) => r.id)).toContain(sampledId);
    // detection: the failed task ends; recovery: the next attempt's first token
    const detectedMs = migrated.map(
      (r) => (r.jobs[0]?.tasks[0]?.finishedAt as number) - injectedAt,
    );
    const recoveredMs = migrated.map(
      (r) => (r.jobs[0]?.tasks.at(-1)?.firstTokenAt as number) - injectedAt,
    );
    for (const ms of detectedMs) expect(ms).toBeLessThan(HUNG_AFTER_MS + 10_000);
    console.log(
      JSON.stringify({
        drill: "hang",
        numStreams: texts.length,
        numMigrated: migrated.length,
        detectedAfterMs: Math.max(...detectedMs),
        recoveredAfterMs: Math.max(...recoveredMs),
      }),
    );
    // no KV block in use on the healthy instance; the hung one's engine was replaced
    for (const inst of dep.instances) {
      const stats = await env.NPU.getByName(npuName(inst.id)).stats();
      if (inst.id === victim) expect(stats.numRunning + stats.numWaiting).toBe(0);
      else expect(stats.numFreeBlocks).toBe(stats.numBlocks);
    }
    // the hung instance was replaced: two serving instances again, the victim not among them
    let serving: string[] = [];
    await vi.waitUntil(
      async () => {
        const d = (await (await admin(`/api/deployments/${dep.id}`)).json()) as {
          serving: { colocated: string[] };
        };
        serving = d.serving.colocated;
        return serving.length === 2 && !serving.includes(victim);
      },
      { timeout: 20_000, interval: 100 },
    );
    console.log(
      JSON.stringify({ drill: "hang", replacedAfterMs: Date.now() - injectedAt, serving }),
    );
    // the deployment serves again, with the same greedy output
    const again = await Promise.all(
      prompts.slice(0, 4).map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt });
        expect(res.status).toBe(200);
        return ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text;
      }),
    );
    expect(again).toEqual(expected.slice(0, 4));
  });

  it("migrates the task of an Npu that dropped its state (its stream breaks)", async () => {
    const req = {
      model: MODEL,
      deployment: chaosDeployment,
      prompt: "A long tale",
      temperature: 0,
      max_tokens: 400,
      ignore_eos: true,
    };
    const expected = (
      (await (await post("/v1/completions", req)).json()) as { choices: { text: string }[] }
    ).choices[0]?.text;
    const res = await post("/v1/completions", { ...req, stream: true });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const stream = await startStream(res);
    const victim = (await record(id)).jobs[0]?.tasks[0]?.instanceId as string;
    const injectedAt = Date.now();
    expect((await fault({ target: "npu", instance: victim, fault: "drop_state" })).status).toBe(
      200,
    );
    const s = streamed(await stream.rest());
    expect(s.errors).toEqual([]);
    expect(s.out).toBe(expected);
    const rec = await ended(id, LOST_AFTER_MS + 10_000);
    expect(rec.status).toBe("succeeded");
    const tasks = rec.jobs[0]?.tasks ?? [];
    expect(tasks).toHaveLength(2);
    expect(tasks[0]?.error).toMatch(/lost the task|unreachable|stream broke/);
    expect(tasks[1]?.instanceId).not.toBe(victim);
    console.log(
      JSON.stringify({
        drill: "drop_state",
        detectedAfterMs: (tasks[0]?.finishedAt as number) - injectedAt,
        recoveredAfterMs: (tasks[1]?.firstTokenAt as number) - injectedAt,
      }),
    );
  });

  it("re-prefills a PD job whose decode instance dropped its state", async () => {
    const dep = (await (
      await postDeployment({
        model: MODEL,
        mode: "pd",
        instances: { prefill: 1, decode: 2 },
        min_instances: { prefill: 1, decode: 2 },
      })
    ).json()) as { id: string };
    const req = {
      model: MODEL,
      deployment: dep.id,
      prompt: "A long tale of two cities",
      temperature: 0.7,
      seed: 77,
      max_tokens: 300,
      ignore_eos: true,
    };
    const expected = (
      (await (await post("/v1/completions", req)).json()) as { choices: { text: string }[] }
    ).choices[0]?.text;
    const res = await post("/v1/completions", { ...req, stream: true });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const stream = await startStream(res);
    const first = (await record(id)).jobs[0]?.tasks ?? [];
    const decode = first.find((t) => t.role === "decode")?.instanceId as string;
    const injectedAt = Date.now();
    expect((await fault({ target: "npu", instance: decode, fault: "drop_state" })).status).toBe(
      200,
    );
    const s = streamed(await stream.rest());
    expect(s.errors).toEqual([]);
    expect(s.out).toBe(expected);
    const rec = await ended(id, LOST_AFTER_MS + 10_000);
    expect(rec.status).toBe("succeeded");
    const tasks = rec.jobs[0]?.tasks ?? [];
    // attempt 0: prefill and decode; attempt 1: a fresh prefill and a decode elsewhere
    expect(tasks).toHaveLength(4);
    const task = (role: string, attempt: number) =>
      tasks.find((t) => t.id.endsWith(`-${role}-${attempt}`));
    expect(task("decode", 0)?.status).toBe("failed");
    expect(task("prefill", 1)?.status).toBe("succeeded");
    expect(task("decode", 1)?.status).toBe("succeeded");
    expect(task("decode", 1)?.instanceId).not.toBe(decode);
    console.log(
      JSON.stringify({
        drill: "pd_decode_drop_state",
        detectedAfterMs: (task("decode", 0)?.finishedAt as number) - injectedAt,
        recoveredAfterMs: (task("decode", 1)?.firstTokenAt as number) - injectedAt,
      }),
    );
  });

  it("ends with one error when no other instance can take the request", async () => {
    // the deployment the model's upload created: one instance
    const deps = (
      (await (await admin("/api/deployments")).json()) as {
        data: { id: string; model: string }[];
      }
    ).data;
    const single = deps.find((d) => d.model === MODEL && d.id !== chaosDeployment)?.id as string;
    const res = await post("/v1/completions", {
      model: MODEL,
      deployment: single,
      prompt: "A long tale",
      max_tokens: 400,
      ignore_eos: true,
      stream: true,
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const stream = await startStream(res);
    const victim = (await record(id)).jobs[0]?.tasks[0]?.instanceId as string;
    expect((await fault({ target: "npu", instance: victim, fault: "drop_state" })).status).toBe(
      200,
    );
    const s = streamed(await stream.rest());
    expect(s.done).toBe(false);
    expect(s.errors).toHaveLength(1);
    const rec = await ended(id, LOST_AFTER_MS + 10_000);
    expect(rec.status).toBe("failed");
    expect(rec.jobs[0]?.tasks).toHaveLength(1);
  });

  it("keeps control-plane records across a reset, and an injected throw is one 500", async () => {
    const res = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 2,
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    await ended(id, 10_000);
    expect((await fault({ target: "job_executor", fault: "drop_state" })).status).toBe(200);
    expect((await fault({ target: "cluster_manager", fault: "drop_state" })).status).toBe(200);
    expect((await record(id)).status).toBe("succeeded");
    expect((await call("/v1/models/lemma-moe")).status).toBe(200);
    // the restarted JobExecutor's alarm runs its reconciliation round without error
    await runDurableObjectAlarm(env.JOB_EXECUTOR.getByName("je/0"));

    expect((await fault({ target: "job_executor", fault: "throw" })).status).toBe(200);
    const failed = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 2,
    });
    expect(failed.status).toBe(500);
    expect(((await failed.json()) as { error: { type: string } }).error.type).toBe("server_error");
    const next = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 2,
    });
    expect(next.status).toBe(200);
  });

  it("resets the JobExecutor under 8 streams: every stream and record completes", async () => {
    const base = { model: "lemma-moe", temperature: 0, max_tokens: 200, ignore_eos: true };
    const streams = await Promise.all(
      prompts.slice(0, 8).map(async (prompt) => {
        const res = await post("/v1/completions", { ...base, prompt, stream: true });
        expect(res.status).toBe(200);
        return { id: res.headers.get("x-request-id") as string, res };
      }),
    );
    expect((await fault({ target: "job_executor", fault: "drop_state" })).status).toBe(200);
    const texts = await Promise.all(streams.map((s) => s.res.text()));
    for (const text of texts) expect(streamed(text).done).toBe(true);
    // the Npus report to the restarted JobExecutor, which continues from its storage
    for (const s of streams) expect((await ended(s.id, 10_000)).status).toBe("succeeded");
  });

  it("is admin-only and refuses faults a target cannot have", async () => {
    expect((await fault({ target: "cluster_manager", fault: "throw" }, "sk-test")).status).toBe(
      403,
    );
    expect((await fault({ target: "job_executor", fault: "hang" })).status).toBe(400);
    expect((await fault({ target: "npu", fault: "hang" })).status).toBe(400);
    expect((await fault({ target: "disk", fault: "hang" })).status).toBe(400);
  });
});
