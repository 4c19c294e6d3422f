/**
 * Serverless scaling through the API and the ClusterManager: scale from zero on a request (its
 * task records the cold start), scale out and in under load with no failed or duplicated
 * request, NPU-fork and the staged tier yield the same weights in memory as a cold load from R2
 * (by hash), a deployment at its maximum answers 503 with Retry-After, and the autoscaler scales
 * out under a queue and back to zero when idle (its alarm driven here, its clock advanced).
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { ClusterManager } from "../../durable-objects/cluster-manager.ts";
import { CLUSTER_MANAGER_NAME, npuName } from "../../shared/protocol/names.ts";
import type { InstanceStatus } from "../../shared/types/instances.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const MODEL = "default-moe";
const cluster = () => env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);

type InstanceView = InstanceStatus & { numRunning: number; numWaiting: number };
interface DeploymentView {
  id: string;
  instances: InstanceView[];
  serving: Record<string, string[]>;
}

async function deployment(id: string): Promise<DeploymentView> {
  const res = await admin(`/api/deployments/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as DeploymentView;
}

async function create(body: object): Promise<DeploymentView> {
  expect((await call("/v1/models")).status).toBe(200); // registers the default model
  const res = await postDeployment({ model: MODEL, mode: "colocated", ...body });
  expect(res.status).toBe(201);
  return (await res.json()) as DeploymentView;
}

/** Waits until the deployment's live instances are `n`, all serving. */
async function serving(id: string, n: number): Promise<DeploymentView> {
  let d: DeploymentView | null = null;
  await vi.waitUntil(
    async () => {
      d = await deployment(id);
      return d.instances.length === n && d.instances.every((i) => i.state === "serving");
    },
    { timeout: 20_000, interval: 20 },
  );
  return d as unknown as DeploymentView;
}

async function complete(deploymentId: string, prompt: string, maxTokens = 8) {
  const res = await post("/v1/completions", {
    model: MODEL,
    deployment: deploymentId,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
  });
  const body = (await res.json()) as { choices?: { text: string }[]; error?: { code: string } };
  return { status: res.status, id: res.headers.get("x-request-id") as string, body };
}

async function ended(id: string): Promise<RequestRecord> {
  let rec: RequestRecord | null = null;
  await vi.waitUntil(
    async () => {
      rec = (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
      return !["queued", "running"].includes(rec.status);
    },
    { timeout: 10_000, interval: 20 },
  );
  return rec as unknown as RequestRecord;
}

const STEPS = ["reserve", "preload", "load", "warmup", "announce"];

describe("scaling", () => {
  it("scales a deployment from zero on a request, which waits and records its cold start", async () => {
    const d = await create({ instances: { colocated: 0 }, min_instances: 0, max_instances: 2 });
    expect(d.instances).toEqual([]);
    const r = await complete(d.id, "Once upon a time");
    expect(r.status).toBe(200);
    const rec = await ended(r.id);
    expect(rec.status).toBe("succeeded");
    const task = rec.jobs[0]?.tasks[0];
    expect(task?.coldStartMs).toBeGreaterThan(0);
    const after = await deployment(d.id);
    expect(after.instances).toHaveLength(1);
    const inst = after.instances[0] as InstanceView;
    expect(inst.state).toBe("serving");
    expect(Object.keys(inst.stepsMs).sort()).toEqual([...STEPS].sort());
    expect(after.serving.colocated).toEqual([inst.id]);
    // a request at a warm deployment has no cold start
    const warm = await ended((await complete(d.id, "Hello")).id);
    expect(warm.jobs[0]?.tasks[0]?.coldStartMs).toBeNull();
  });

  it("answers 503 with Retry-After when a deployment at its maximum of 0 gets a request", async () => {
    const d = await create({ instances: { colocated: 0 }, min_instances: 0, max_instances: 0 });
    const r = await post("/v1/completions", { model: MODEL, deployment: d.id, prompt: "Hi" });
    expect(r.status).toBe(503);
    expect(r.headers.get("retry-after")).toMatch(/^\d+$/);
    const err = ((await r.json()) as { error: { code: string; message: string } }).error;
    expect(err.code).toBe("deployment_at_max");
    expect(err.message).toContain("maximum of 0");
  });

  it("validates bounds and scale requests", async () => {
    const bad = await postDeployment({
      model: MODEL,
      mode: "colocated",
      instances: { colocated: 3 },
      max_instances: 2,
    });
    expect(bad.status).toBe(400);
    const pdBound = await postDeployment({
      model: MODEL,
      mode: "pd",
      instances: { prefill: 1, decode: 1 },
      max_instances: 2,
    });
    expect(pdBound.status).toBe(400);
    const d = await create({ instances: { colocated: 1 }, min_instances: 1, max_instances: 2 });
    const over = await admin(`/api/deployments/${d.id}/scale`, {
      method: "POST",
      body: JSON.stringify({ instances: 3 }),
    });
    expect(over.status).toBe(400);
    const wrongShape = await admin(`/api/deployments/${d.id}/scale`, {
      method: "POST",
      body: JSON.stringify({ prefill: 1, decode: 1 }),
    });
    expect(wrongShape.status).toBe(400);
    const asUser = await post(`/api/deployments/${d.id}/scale`, { instances: 2 });
    expect(asUser.status).toBe(403);
  });

  it("scales out and in under load with no failed or duplicated request", async () => {
    const d = await create({ instances: { colocated: 1 }, min_instances: 1, max_instances: 4 });
    await serving(d.id, 1);
    const prompts = Array.from({ length: 12 }, (_, i) => `Once upon a time there was fox ${i}.`);
    const first = prompts.map((p) => complete(d.id, p, 12));
    const out = await admin(`/api/deployments/${d.id}/scale`, {
      method: "POST",
      body: JSON.stringify({ instances: 3 }),
    });
    expect(out.status).toBe(200);
    await serving(d.id, 3);
    // more load while the deployment scales back in: draining instances finish what they run
    const second = prompts.map((p) => complete(d.id, p, 12));
    const inn = await admin(`/api/deployments/${d.id}/scale`, {
      method: "POST",
      body: JSON.stringify({ instances: 1 }),
    });
    expect(inn.status).toBe(200);
    const results = await Promise.all([...first, ...second]);
    for (const r of results) expect(r.status).toBe(200);
    // the same greedy prompt gives the same text on any instance
    results.slice(0, 12).forEach((r, i) => {
      expect(results[12 + i]?.body.choices?.[0]?.text).toBe(r.body.choices?.[0]?.text);
    });
    const records = await Promise.all(results.map((r) => ended(r.id)));
    for (const rec of records) {
      expect(rec.status).toBe("succeeded");
      expect(rec.jobs).toHaveLength(1);
      expect(rec.jobs[0]?.tasks).toHaveLength(1);
    }
    await serving(d.id, 1);
    // the drained instances went back unbound
    const all = await cluster().deploymentStatus({ id: d.id });
    expect(all?.record.instances.colocated).toHaveLength(1);
  });

  it("loads the same weights into memory from R2, the staged tier and a fork (hash)", async () => {
    const d = await create({ instances: { colocated: 0 }, min_instances: 0, max_instances: 3 });
    const digestOf = async (n: number) => {
      const s = (await serving(d.id, n)).instances.at(-1) as InstanceView & {
        weightsDigest: string;
      };
      return s;
    };
    const scale = (n: number, path: "r2" | "staged" | "fork") =>
      cluster().scaleDeployment({
        id: d.id,
        target: { colocated: n, prefill: 0, decode: 0 },
        path,
        verify: true,
      });
    expect((await scale(1, "r2")).ok).toBe(true);
    const cold = await digestOf(1);
    expect((await scale(2, "fork")).ok).toBe(true);
    const forked = await digestOf(2);
    expect((await scale(3, "staged")).ok).toBe(true);
    const staged = await digestOf(3);
    expect(cold.weightsDigest).toMatch(/^[0-9a-f]{64}$/);
    expect(forked.weightsDigest).toBe(cold.weightsDigest);
    expect(staged.weightsDigest).toBe(cold.weightsDigest);
    const size = cold.bytesByTier.r2;
    expect(size).toBeGreaterThan(1_000_000);
    // it copied a serving peer's memory (this deployment's or another of the same weights)
    expect(forked.source?.tier).toBe("fork");
    // a fork copies the GGUF header and the weight region its source built, nothing else
    const { memory } = await env.NPU.getByName(npuName(forked.id)).stats();
    const resident = memory?.residentWeightBytes ?? 0;
    expect(resident).toBeGreaterThan(size * 0.9);
    expect(forked.bytesByTier.r2 + forked.bytesByTier.staged).toBe(0);
    const headerBytes = forked.bytesByTier.fork - resident;
    expect(headerBytes).toBeGreaterThan(0);
    expect(headerBytes).toBeLessThanOrEqual(size - resident);
    expect(staged.bytesByTier).toEqual({ r2: 0, staged: size, fork: 0 });
  });

  it("autoscales out under a queue and back to zero when idle", async () => {
    const d = await create({ instances: { colocated: 1 }, min_instances: 0, max_instances: 3 });
    const [inst] = (await serving(d.id, 1)).instances;
    // 48 sequences on one instance: 32 run (MAX_NUM_SEQS), 16 wait
    const res = post("/v1/completions", {
      model: MODEL,
      deployment: d.id,
      prompt: Array.from({ length: 48 }, (_, i) => `Fox ${i} ran.`),
      max_tokens: 64,
      ignore_eos: true,
    });
    const npu = env.NPU.getByName(`${inst?.id}/npu/0`);
    await vi.waitUntil(async () => (await npu.stats()).numWaiting > 0, {
      timeout: 10_000,
      interval: 5,
    });
    const cm = cluster();
    // the alarm's handler, driven now (its own schedule may also have run it meanwhile)
    await runInDurableObject(cm, (c: ClusterManager) => c.alarm());
    const out = await deployment(d.id);
    expect(out.instances.length).toBeGreaterThan(1);
    expect((await res).status).toBe(200);
    await serving(d.id, out.instances.length);
    // idle past SCALE_TO_ZERO_AFTER_S: the next tick (its clock advanced) scales to zero
    const decisions = await runInDurableObject(cm, (c: ClusterManager) =>
      c.autoscaler.tick(Date.now() + 301_000),
    );
    expect(decisions.find((x) => x.deploymentId === d.id)?.decision).toEqual({
      target: 0,
      reason: "idle",
    });
    await vi.waitUntil(async () => (await deployment(d.id)).instances.length === 0, {
      timeout: 10_000,
      interval: 20,
    });
    expect((await deployment(d.id)).serving.colocated).toEqual([]);
    // and from zero again on the next request
    const again = await complete(d.id, "Hi");
    expect(again.status).toBe(200);
    expect((await ended(again.id)).jobs[0]?.tasks[0]?.coldStartMs).toBeGreaterThan(0);
  });
});
