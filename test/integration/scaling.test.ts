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
import { npuName } from "../../shared/protocol/names.ts";
import {
  cluster,
  complete,
  create,
  deployment,
  ended,
  type InstanceView,
  MODEL,
  serving,
} from "./scaling-helpers.ts";
import { admin, post, postDeployment } from "./worker-client.ts";

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
