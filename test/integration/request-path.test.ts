/**
 * The request path after the JobExecutor took over tokenising and placement: 503 no_deployment
 * (no retry-after) when nothing can serve a job, 429 (with retry-after) when an instance's queue
 * is full, a repeated task id or another protocol version refused by the Npu as a value, an
 * engine failure ending each of its tasks with one error frame, the JobExecutor's scheduling
 * snapshot surviving a restart, a model re-upload retiring its deployments and context caches,
 * the prefix cache's tenant and cache_salt isolation, cached tokens reported by PD deployments,
 * and a context cache's deployment pin.
 *
 * Every test that needs an instance of its own creates a deployment (or model) and pins it, so
 * tests neither see each other's load or cached prefixes nor leave state behind.
 */
import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { JobExecutor } from "../../durable-objects/job-executor.ts";
import { ModelScheduler, type SchedulerSnapshot } from "../../durable-objects/model-scheduler.ts";
import type { Npu } from "../../durable-objects/npu.ts";
import type { NpuParts } from "../../durable-objects/npu-parts.ts";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { lemmaProblem } from "../../shared/eval/lemma-chain.ts";
import { decodeEvents } from "../../shared/protocol/codec.ts";
import type { GenerateEvent, JobSpec, SubmitJob } from "../../shared/protocol/messages.ts";
import { npuName } from "../../shared/protocol/names.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol/version.ts";
import { cacheSaltFor, PrefixTree } from "../../shared/serving/prefix-tree.ts";
import type { DeploymentState } from "../../shared/serving/scheduling.ts";
import type { DeploymentRecord, ModelRecord } from "../../shared/types/deployments.ts";
import { jobExecutorFor } from "../../workers/env.ts";
import { newJobId, newRequestId } from "../../workers/ids.ts";
import { toGenerateFields } from "../../workers/openai/generate-fields.ts";
import { CompletionSchema } from "../../workers/openai/schemas.ts";
import { parseSse } from "../helpers/sse.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const MODEL = "lemma-moe";
const BLOCK_SIZE = 16; // KV_BLOCK_SIZE in wrangler.toml
/** The lemma model's context length (models/lemma-moe.gguf). */
const CONTEXT = 512;
/**
 * The most tokens a completion of `prompt` may ask for: the lemma model's vocabulary is one token
 * per character, and the prompt gets a BOS.
 */
const fillContext = (prompt: string) => CONTEXT - (prompt.length + 1);

interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

interface Completion {
  choices: { text: string; finish_reason: string }[];
  usage: {
    prompt_tokens: number;
    completion_tokens: number;
    prompt_tokens_details: { cached_tokens: number };
  };
}

interface DeploymentView {
  id: string;
  model: string;
  mode: string;
  generation: number;
  instances: { id: string; role: string; numRunning: number; numWaiting: number }[];
}

interface RequestRec {
  status: string;
  jobs: { tasks: { role: string; status: string; instanceId: string; error: string | null }[] }[];
}

/** Uploads the embedded default model's bytes under `name` (it gets one colocated deployment). */
async function upload(name: string): Promise<void> {
  const res = await admin(`/api/models/${name}`, { method: "PUT", body: DEFAULT_MODEL });
  expect(res.status).toBe(201);
}

async function createDeployment(
  model: string,
  mode: "colocated" | "pd",
  instances: Record<string, number>,
  scheduler = "deepflow",
): Promise<DeploymentView> {
  const res = await postDeployment({ model, mode, instances, scheduler });
  expect(res.status).toBe(201);
  return (await res.json()) as DeploymentView;
}

async function deleteDeployment(id: string): Promise<void> {
  expect((await admin(`/api/deployments/${id}`, { method: "DELETE" })).status).toBe(200);
}

async function deploymentsOf(model: string): Promise<DeploymentView[]> {
  const res = await admin("/api/deployments");
  expect(res.status).toBe(200);
  return ((await res.json()) as { data: DeploymentView[] }).data.filter((d) => d.model === model);
}

/** A completion that must succeed: its body and request id. */
async function complete(body: object, key?: string): Promise<{ id: string; body: Completion }> {
  const res = await post("/v1/completions", body, key);
  expect(res.status).toBe(200);
  return { id: res.headers.get("x-request-id") as string, body: (await res.json()) as Completion };
}

async function record(id: string, key = "sk-test"): Promise<RequestRec> {
  const res = await call(`/api/requests/${id}`, {}, key);
  expect(res.status).toBe(200);
  return (await res.json()) as RequestRec;
}

/** The request's record once it has ended (reports reach the JobExecutor after the response). */
async function ended(id: string, key?: string): Promise<RequestRec> {
  let rec: RequestRec | null = null;
  await vi.waitUntil(
    async () => {
      rec = await record(id, key);
      return !["queued", "running"].includes(rec.status);
    },
    { timeout: 10_000, interval: 20 },
  );
  return rec as unknown as RequestRec;
}

async function instanceOf(id: string): Promise<string> {
  return (await record(id)).jobs[0]?.tasks[0]?.instanceId as string;
}

/** Waits until none of the deployment's instances has running or waiting sequences. */
async function idle(deploymentId: string): Promise<void> {
  await vi.waitUntil(
    async () => {
      const d = (await (await admin(`/api/deployments/${deploymentId}`)).json()) as DeploymentView;
      return d.instances.every((i) => i.numRunning + i.numWaiting === 0);
    },
    { timeout: 10_000, interval: 20 },
  );
}

/** Starts a streamed completion and reads its first chunk (the task runs on its instance). */
async function startStream(body: object) {
  const res = await post("/v1/completions", { ...body, stream: true });
  expect(res.status).toBe(200);
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const first = await reader.read();
  expect(first.done).toBe(false);
  const decoder = new TextDecoder();
  let text = decoder.decode(first.value, { stream: true });
  return {
    id: res.headers.get("x-request-id") as string,
    reader,
    /** Everything the stream sends from here on, with the first chunk. */
    async rest(): Promise<string> {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return text + decoder.decode();
        text += decoder.decode(value, { stream: true });
      }
    },
  };
}

async function modelRecord(name: string): Promise<ModelRecord> {
  const m = await env.CLUSTER_MANAGER.getByName("cluster").getModel({ name });
  expect(m).not.toBeNull();
  return m as ModelRecord;
}

/** A job planned by the JobExecutor as the worker plans one (workers/openai/app.ts). */
async function planJob(m: ModelRecord, deployment: DeploymentRecord, maxTokens: number) {
  const fields = toGenerateFields(
    CompletionSchema.parse({
      model: m.name,
      prompt: "Once upon a time",
      max_tokens: maxTokens,
      ignore_eos: true,
      temperature: 0,
    }),
    "completion",
    () => 1,
  );
  const requestId = newRequestId();
  const spec: JobSpec = {
    requestId,
    jobId: newJobId(),
    tenant: "test",
    model: m.name,
    input: fields.input,
    n: fields.n,
    maxTokens: fields.maxTokens,
    sampling: fields.sampling,
    cacheSalt: fields.cacheSalt,
  };
  const submit: SubmitJob = {
    spec,
    kind: "text_completion",
    clientRequestId: null,
    receivedAt: Date.now(),
    deployment: deployment.id,
    contextCache: null,
  };
  const submitted = await jobExecutorFor(env, requestId).submit(submit);
  if (!submitted.ok) throw new Error(`submit failed: ${submitted.error.message}`);
  const { placement, task } = submitted.value;
  if (placement.mode !== "colocated") throw new Error("expected a colocated placement");
  const t = placement.colocated;
  return {
    requestId,
    npu: env.NPU.getByName(t.npu),
    task: { ...task, taskId: t.taskId, r2Key: m.r2Key },
  };
}

async function readEvents(stream: ReadableStream<Uint8Array>): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const e of decodeEvents(stream.getReader())) out.push(e);
  return out;
}

/** A lemma problem's prompt: 73 characters, 74 tokens with the BOS (four full KV blocks). */
const LONG_PROMPT = lemmaProblem(7, 0).prompt;
/** The prompts of lemma problems 0..n-1 of the stream `seed`. */
const problems = (seed: number, n: number) =>
  Array.from({ length: n }, (_, i) => lemmaProblem(seed, i).prompt);

describe("request path", () => {
  it("answers 503 no_deployment without retry-after when no deployment can serve", async () => {
    const name = "rp-no-deployment";
    await upload(name);
    for (const d of await deploymentsOf(name)) await deleteDeployment(d.id);
    expect(await deploymentsOf(name)).toEqual([]);
    const res = await post("/v1/completions", { model: name, prompt: "Hello", max_tokens: 4 });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBeNull();
    const body = (await res.json()) as ErrorBody;
    expect(body.error).toEqual({
      message: expect.stringContaining(name),
      type: "server_error",
      param: null,
      code: "no_deployment",
    });
    // nothing was recorded for it
    const id = res.headers.get("x-request-id") as string;
    expect((await call(`/api/requests/${id}`)).status).toBe(404);

    // a model with only a PD deployment serves one sequence, not n = 2
    const pdName = "rp-pd-only";
    await upload(pdName);
    const [colocated] = await deploymentsOf(pdName);
    const pd = await createDeployment(pdName, "pd", { prefill: 1, decode: 1 });
    await deleteDeployment(colocated?.id as string);
    const two = await post("/v1/completions", { model: pdName, prompt: "Hi", n: 2, max_tokens: 4 });
    expect(two.status).toBe(503);
    expect(two.headers.get("retry-after")).toBeNull();
    const err = ((await two.json()) as ErrorBody).error;
    expect(err.code).toBe("no_deployment");
    expect(err.message).toContain(pdName);
    // control: the PD deployment serves n = 1
    const one = await complete({ model: pdName, prompt: "Hi", max_tokens: 4 });
    expect(one.body.usage.completion_tokens).toBeGreaterThan(0);
    expect((await record(one.id)).jobs[0]?.tasks.map((t) => t.role).sort()).toEqual([
      "decode",
      "prefill",
    ]);
    await deleteDeployment(pd.id);
  });

  it("answers 429 with retry-after when an instance's queue is full, and nothing hangs", async () => {
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const queued = problems(1, 32);
    // 32 prompts x n = 8 = 256 sequences: exactly the most an Npu queues (MAX_WAITING_SEQS)
    const big = {
      model: MODEL,
      deployment: dep.id,
      prompt: queued,
      n: 8,
      max_tokens: Math.min(...queued.map(fillContext)),
      ignore_eos: true,
    };
    // the first fills the queue: at most MAX_NUM_SEQS (32) of its sequences run, the rest wait
    const first = await startStream(big);
    const [streamed, plain] = await Promise.all([
      post("/v1/completions", { ...big, stream: true }),
      post("/v1/completions", big),
    ]);
    for (const res of [streamed, plain]) {
      expect(res.status).toBe(429);
      expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
      const err = ((await res.json()) as ErrorBody).error;
      expect(err.type).toBe("rate_limit_error");
      expect(err.code).toBe("rate_limit_exceeded");
    }
    // the accepted one is still running; cancelling it empties the instance
    expect((await record(first.id)).status).toBe("running");
    await first.reader.cancel();
    expect((await ended(first.id)).status).toBe("cancelled");
    await idle(dep.id);
    // the instance takes work again and finishes it
    const after = await complete({ model: MODEL, deployment: dep.id, prompt: "Hi", max_tokens: 4 });
    expect(after.body.choices).toHaveLength(1);
    expect((await ended(after.id)).status).toBe("succeeded");
    const inst = await env.NPU.getByName(npuName(dep.instances[0]?.id as string)).stats();
    expect(inst).toMatchObject({ numRunning: 0, numWaiting: 0, numTasks: 0 });
    expect(inst.numFreeBlocks).toBe(inst.numBlocks);
    await deleteDeployment(dep.id);
  });

  it("refuses a repeated task id as a conflict while the first runs to completion", async () => {
    expect((await call("/v1/models")).status).toBe(200); // registers the default model
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const m = await modelRecord(MODEL);
    const d = m.deployments.find((x) => x.id === dep.id) as DeploymentRecord;
    const { requestId, npu, task } = await planJob(m, d, 300);
    const conflict = {
      ok: false,
      error: expect.objectContaining({ kind: "conflict", code: "duplicate_task" }),
    };
    // the same id twice in one tick, inside the Npu: the second arrives while the first is
    // still starting (loading the model), before its stream is registered
    const [first, second] = await runInDurableObject(npu, (obj: Npu) =>
      Promise.all([obj.generate(task), obj.generate(task)]),
    );
    expect(second).toEqual(conflict);
    if (!first.ok) throw new Error(`the first was refused: ${first.error.message}`);
    // again over RPC while the first is running
    expect(await npu.generate(task)).toEqual(conflict);
    const events = await readEvents(first.value.stream);
    expect(events.filter((e) => e.type === "error")).toEqual([]);
    expect(events.filter((e) => e.type === "delta").length).toBeGreaterThan(0);
    expect(events.slice(-2)).toMatchObject([
      { type: "finish", finishReason: "length", numOutputTokens: 300 },
      { type: "usage", completionTokens: 300 },
    ]);
    const rec = await ended(requestId);
    expect(rec.status).toBe("succeeded");
    expect(rec.jobs[0]?.tasks).toHaveLength(1);
    expect(
      (await env.NPU.getByName(npuName(d.instances.colocated[0] as string)).stats()).numTasks,
    ).toBe(0);
    await deleteDeployment(dep.id);
  });

  it("refuses a repeated prefill task id while the first prefill is computing", async () => {
    expect((await call("/v1/models")).status).toBe(200);
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const m = await modelRecord(MODEL);
    const d = m.deployments.find((x) => x.id === dep.id) as DeploymentRecord;
    const { npu, task } = await planJob(m, d, 4);
    const [first, second] = await runInDurableObject(npu, (obj: Npu) =>
      Promise.all([obj.prefill(task), obj.prefill(task)]),
    );
    expect(second).toEqual({
      ok: false,
      error: expect.objectContaining({ kind: "conflict", code: "duplicate_task" }),
    });
    if (!first.ok) throw new Error(`the first prefill was refused: ${first.error.message}`);
    await npu.fabricFree({ regionId: first.value.region.regionId });
    await deleteDeployment(dep.id);
  });

  it("refuses a task of another protocol version without running anything", async () => {
    expect((await call("/v1/models")).status).toBe(200);
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const m = await modelRecord(MODEL);
    const d = m.deployments.find((x) => x.id === dep.id) as DeploymentRecord;
    const { requestId, npu, task } = await planJob(m, d, 4);
    expect(task.protocolVersion).toBe(PROTOCOL_VERSION);
    for (const protocolVersion of [0, PROTOCOL_VERSION + 1]) {
      const mismatch = {
        ok: false,
        error: expect.objectContaining({ kind: "overloaded", code: "protocol_mismatch" }),
      };
      expect(await npu.generate({ ...task, protocolVersion })).toEqual(mismatch);
      expect(await npu.prefill({ ...task, protocolVersion })).toEqual(mismatch);
    }
    const untouched = await npu.stats();
    // the instance loaded eagerly when the deployment scaled; nothing ran on it
    expect(untouched).toMatchObject({ model: MODEL, numTasks: 0, recentSteps: [] });
    // control: the same task in the current version runs
    const ok = await npu.generate(task);
    if (!ok.ok) throw new Error(ok.error.message);
    const events = await readEvents(ok.value.stream);
    expect(events.at(-1)).toMatchObject({ type: "usage", completionTokens: 4 });
    const used = await npu.stats();
    expect(used.model).toBe(MODEL);
    expect(used.recentSteps.length).toBeGreaterThan(0);
    expect((await ended(requestId)).status).toBe("succeeded");
    await deleteDeployment(dep.id);
  });

  it("ends each task of a failed engine loop with exactly one error frame", async () => {
    // a deployment of its own: its Npu keeps the failing executor
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const [a, b] = problems(2, 2) as [string, string];
    const maxTokens = fillContext(a);
    const body = { model: MODEL, deployment: dep.id, max_tokens: maxTokens, ignore_eos: true };
    const streams = [
      await startStream({ ...body, prompt: a }),
      await startStream({ ...body, prompt: b }),
    ];
    const instances = await Promise.all(streams.map((s) => instanceOf(s.id)));
    expect(instances[1]).toBe(instances[0]);
    await runInDurableObject(env.NPU.getByName(npuName(instances[0] as string)), (npu: Npu) => {
      const loaded = (npu as unknown as { parts: NpuParts }).parts.slot.current;
      if (!loaded) throw new Error("the Npu has no model loaded");
      loaded.instance.engine.executor.execute = () =>
        Promise.reject(new Error("injected executor failure"));
    });
    for (const s of streams) {
      const frames = parseSse(await s.rest());
      expect(frames).not.toContain("[DONE]");
      const errors = frames.filter((f) => typeof f === "object" && "error" in f) as ErrorBody[];
      expect(errors).toHaveLength(1);
      expect(frames.at(-1)).toBe(errors[0]);
      expect(errors[0]?.error.type).toBe("server_error");
      // it stopped early
      const deltas = frames.filter((f) => typeof f === "object" && "choices" in f);
      expect(deltas.length).toBeLessThan(maxTokens);
      const rec = await ended(s.id);
      expect(rec.status).toBe("failed");
      expect(rec.jobs[0]?.tasks[0]?.status).toBe("failed");
    }
    // the failed tasks' sequences were aborted and their KV blocks freed
    const stats = await env.NPU.getByName(npuName(instances[0] as string)).stats();
    expect(stats).toMatchObject({ numRunning: 0, numWaiting: 0, numTasks: 0 });
    expect(stats.numFreeBlocks).toBe(stats.numBlocks);
    await deleteDeployment(dep.id);
  });

  it("restores the JobExecutor's prefix locality from its snapshot after a restart", async () => {
    const je = env.JOB_EXECUTOR.getByName("je/0");
    expect((await call("/v1/models")).status).toBe(200);
    await runDurableObjectAlarm(je); // flush an earlier test's pending snapshot
    const dep = await createDeployment(MODEL, "colocated", { colocated: 2 });
    const order = dep.instances.map((i) => i.id);
    const pinned = { model: MODEL, deployment: dep.id, temperature: 0 };
    // 64 long sequences make the first instance busy (32 run, 32 wait with their prompts not yet
    // computed: load whatever output length the predictor expects), so the prefix is first
    // placed on the second
    const longOnes = problems(3, 8);
    const busy = await startStream({
      ...pinned,
      prompt: longOnes,
      n: 8,
      max_tokens: Math.min(...longOnes.map(fillContext)),
      ignore_eos: true,
    });
    expect(await instanceOf(busy.id)).toBe(order[0]);
    // a problem's 16 facts (64 tokens after the BOS) and two queries
    const facts = lemmaProblem(4, 0).prompt;
    const prefix = facts.slice(0, facts.indexOf("Q"));
    const q1 = "Q04W1F2G3";
    const q2 = "Q09W4F5G6";
    const r1 = await complete({ ...pinned, prompt: `${prefix}${q1}`, max_tokens: 4 });
    expect(await instanceOf(r1.id)).toBe(order[1]);
    // placing it scheduled a snapshot a few seconds ahead
    const alarm = await runInDurableObject(je, (_je: JobExecutor, state) =>
      state.storage.getAlarm(),
    );
    expect(alarm).not.toBeNull();
    expect(alarm as number).toBeLessThanOrEqual(Date.now() + 5_000);
    await busy.reader.cancel();
    expect((await ended(busy.id)).status).toBe("cancelled");
    expect((await ended(r1.id)).status).toBe("succeeded"); // its reports taught the prefix tree
    await idle(dep.id);

    await runDurableObjectAlarm(je);
    const snap = await runInDurableObject(je, (_je: JobExecutor, state) =>
      state.storage.kv.get<SchedulerSnapshot>(`sched/${MODEL}`),
    );
    const m = await modelRecord(MODEL);
    expect(snap?.generation).toBe(m.generation);

    // the snapshot holds r1's prompt (every full block) on the instance that served it
    const fresh = async (generation: number) => {
      const s = new ModelScheduler(MODEL, generation, BLOCK_SIZE, 1); // PREFIX_INDEX_TOKENS "16" here
      s.restore(snap as SchedulerSnapshot);
      await s.ensureTokenizer(env.MODELS, m);
      return s;
    };
    const restored = await fresh(m.generation);
    const keysOf = (prompt: string) => {
      const p = restored.prepare({ kind: "completion", prompts: [prompt] }, 4, CONTEXT);
      if (!p.ok) throw new Error(p.error.message);
      const ids = p.value.prompts[0] as number[];
      return { ids, keys: restored.blockKeys(ids, cacheSaltFor("test", null)) };
    };
    const k1 = keysOf(`${prefix}${q1}`);
    const k2 = keysOf(`${prefix}${q2}`);
    const matched = PrefixTree.fromJSON((snap as SchedulerSnapshot).tree).match(k1.keys);
    expect(matched.get(order[1] as string)).toBe(k1.keys.length);
    expect(matched.has(order[0] as string)).toBe(false);
    let common = 0;
    while (common < k2.keys.length && k2.keys[common] === k1.keys[common]) common++;
    expect(common).toBeGreaterThanOrEqual(2);

    // restored into a fresh scheduler, it places r2's prompt on that instance, where an idle,
    // balanced deployment would otherwise take the first instance
    const idleState: DeploymentState = {
      deploymentId: dep.id,
      mode: "colocated",
      policy: "deepflow",
      instances: order.map((instanceId) => ({
        instanceId,
        role: "colocated",
        numRunning: 0,
        numWaiting: 0,
        numFreeBlocks: 0,
        numOutstandingTokens: 0,
      })),
    };
    const place = (s: ModelScheduler) => s.place([idleState], k2.keys, k2.ids.length, 4)?.decision;
    const decision = place(restored);
    expect(decision).toMatchObject({ instanceId: order[1], reason: "prefix" });
    const scores = decision?.scores.find((x) => x.instanceId === order[1]);
    expect(scores?.numMatchedBlocks).toBe(common);
    // a snapshot of other weights is ignored
    expect(place(await fresh(m.generation + 1))).toMatchObject({
      instanceId: order[0],
      reason: "least-loaded",
    });

    // restart the JobExecutor: its memory is gone, the snapshot is not
    await runInDurableObject(je, (_je: JobExecutor, state) => {
      state.abort("restart for the test");
    }).catch(() => {});
    const r2 = await complete({ ...pinned, prompt: `${prefix}${q2}`, max_tokens: 4 });
    expect(await instanceOf(r2.id)).toBe(order[1]);
    expect(r2.body.usage.prompt_tokens).toBe(k2.ids.length);
    expect(r2.body.usage.prompt_tokens_details.cached_tokens).toBe(common * BLOCK_SIZE);
    await deleteDeployment(dep.id);
  });

  it("retires a re-uploaded model's deployments and context caches", async () => {
    const name = "rp-reupload";
    await upload(name);
    const [old] = await deploymentsOf(name);
    expect(old).toBeDefined();
    const created = await post("/api/context-caches", {
      model: name,
      prompt: LONG_PROMPT,
      ttl_seconds: 120,
    });
    expect(created.status).toBe(201);
    const cache = (await created.json()) as { id: string; instance_id: string };
    expect(old?.instances.map((i) => i.id)).toContain(cache.instance_id);
    const tail = { model: name, prompt: " Then the fox slept.", max_tokens: 4, temperature: 0 };
    const used = await complete({ ...tail, context_cache: cache.id });
    expect(used.body.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);

    await upload(name);
    const got = await call(`/v1/models/${name}`);
    expect(got.status).toBe(200);
    expect(((await got.json()) as { id: string }).id).toBe(name);
    const now = await deploymentsOf(name);
    expect(now.map((d) => d.id)).not.toContain(old?.id);
    expect(now).toHaveLength(1);
    expect(now[0]?.generation).toBe((old?.generation as number) + 1);
    expect((await admin(`/api/deployments/${old?.id}`)).status).toBe(404);

    const stale = await post("/v1/completions", { ...tail, context_cache: cache.id });
    expect(stale.status).toBe(404);
    const err = ((await stale.json()) as ErrorBody).error;
    expect(err).toMatchObject({ param: "context_cache", code: "context_cache_not_found" });
    expect(err.message).toContain("re-uploaded");
    // a request without it runs on the new deployment's instance
    const fresh = await complete(tail);
    expect(fresh.body.usage.completion_tokens).toBeGreaterThan(0);
    expect(now[0]?.instances.map((i) => i.id)).toContain(await instanceOf(fresh.id));
  });

  it("keeps each tenant's and each cache_salt's prefix cache apart", async () => {
    const dep = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const req = {
      model: MODEL,
      deployment: dep.id,
      prompt: LONG_PROMPT,
      max_tokens: 8,
      temperature: 0,
    };
    const cached = (c: { body: Completion }) => c.body.usage.prompt_tokens_details.cached_tokens;
    const first = await complete(req);
    expect(first.body.usage.prompt_tokens).toBeGreaterThanOrEqual(3 * BLOCK_SIZE);
    expect(cached(first)).toBe(0);
    const second = await complete(req);
    expect(cached(second)).toBeGreaterThanOrEqual(2 * BLOCK_SIZE);
    expect(cached(second) % BLOCK_SIZE).toBe(0);
    const text = first.body.choices[0]?.text;
    expect(second.body.choices[0]?.text).toBe(text);
    // same prompt, same instance, another tenant: nothing shared
    const other = await complete(req, "sk-other");
    expect(cached(other)).toBe(0);
    expect(other.body.choices[0]?.text).toBe(text);
    // the same tenant with a cache_salt: a cache of its own, reused by the same salt
    const salted = await complete({ ...req, cache_salt: "x" });
    expect(cached(salted)).toBe(0);
    expect(salted.body.choices[0]?.text).toBe(text);
    const saltedAgain = await complete({ ...req, cache_salt: "x" });
    expect(cached(saltedAgain)).toBe(cached(second));
    await deleteDeployment(dep.id);
  });

  it("reports the tokens a PD deployment's prefill side took from its prefix cache", async () => {
    const pd = await createDeployment(MODEL, "pd", { prefill: 1, decode: 1 });
    const prefill = env.NPU.getByName(
      npuName(pd.instances.find((i) => i.role === "prefill")?.id as string),
    );
    const computed = async () =>
      (await prefill.stats()).recentSteps.reduce((a, s) => a + s.numScheduledTokens, 0);
    const req = {
      model: MODEL,
      deployment: pd.id,
      prompt: LONG_PROMPT,
      max_tokens: 8,
      temperature: 0,
    };
    const a = await complete(req);
    expect(a.body.usage.prompt_tokens_details.cached_tokens).toBe(0);
    const before = await computed();
    expect(before).toBe(a.body.usage.prompt_tokens);
    const b = await complete(req);
    const reused = b.body.usage.prompt_tokens_details.cached_tokens;
    expect(reused).toBeGreaterThanOrEqual(2 * BLOCK_SIZE);
    expect(reused % BLOCK_SIZE).toBe(0);
    // exactly what the prefill side did not compute again
    expect((await computed()) - before).toBe(b.body.usage.prompt_tokens - reused);
    expect(b.body.choices[0]?.text).toBe(a.body.choices[0]?.text);
    expect(b.body.usage.prompt_tokens).toBe(a.body.usage.prompt_tokens);
    await deleteDeployment(pd.id);
  });

  it("accepts a context cache with its own deployment pinned, and no other", async () => {
    const extra = await createDeployment(MODEL, "colocated", { colocated: 1 });
    const created = await post("/api/context-caches", { model: MODEL, prompt: LONG_PROMPT });
    expect(created.status).toBe(201);
    const cache = (await created.json()) as { id: string; instance_id: string };
    const deps = await deploymentsOf(MODEL);
    const own = deps.find((d) => d.instances.some((i) => i.id === cache.instance_id));
    const another = deps.find((d) => d.id !== own?.id && d.mode === "colocated");
    expect(own).toBeDefined();
    expect(another).toBeDefined();
    const req = {
      model: MODEL,
      prompt: " Then the fox slept.",
      context_cache: cache.id,
      max_tokens: 4,
    };
    const wrong = await post("/v1/completions", { ...req, deployment: another?.id });
    expect(wrong.status).toBe(400);
    expect(((await wrong.json()) as ErrorBody).error).toMatchObject({
      type: "invalid_request_error",
      param: "deployment",
    });
    const right = await complete({ ...req, deployment: own?.id });
    expect(right.body.usage.prompt_tokens_details.cached_tokens).toBeGreaterThan(0);
    expect(await instanceOf(right.id)).toBe(cache.instance_id);
    expect((await call(`/api/context-caches/${cache.id}`, { method: "DELETE" })).status).toBe(200);
    await deleteDeployment(extra.id);
  });
});
