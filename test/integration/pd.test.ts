/**
 * PD disaggregation through the API: a PD deployment's greedy output equals the colocated one,
 * the job runs as a prefill task and a decode task on different NPUs, the decode side computes
 * no prompt token, the fabric moves exactly the prompt's KV bytes, and all blocks and regions
 * are released afterwards. Also: deployment validation and the fabric's durable regions.
 */

import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { Npu } from "../../durable-objects/npu.ts";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../shared/model/config.ts";
import { npuName } from "../../shared/protocol/names.ts";
import { admin, call, postDeployment } from "./worker-client.ts";

interface Deployment {
  id: string;
  mode: string;
  instances: { id: string; role: string }[];
}

async function createPd(model: string): Promise<Deployment> {
  const res = await postDeployment({ model, mode: "pd", instances: { prefill: 1, decode: 1 } });
  expect(res.status).toBe(201);
  return (await res.json()) as Deployment;
}

async function complete(body: object) {
  const res = await call("/v1/completions", { method: "POST", body: JSON.stringify(body) });
  expect(res.status).toBe(200);
  const id = res.headers.get("x-request-id") as string;
  return {
    id,
    body: (await res.json()) as {
      choices: { text: string; finish_reason: string }[];
      usage: { prompt_tokens: number; completion_tokens: number };
    },
  };
}

async function uploadStories(): Promise<string> {
  const res = await admin("/api/models/stories", {
    method: "PUT",
    body: env.REF_STORIES as ArrayBuffer,
  });
  expect(res.status).toBe(201);
  return "stories";
}

describe("PD deployments", () => {
  it("validates specs and pins", async () => {
    const bad = await postDeployment({
      model: "lemma-moe",
      mode: "pd",
      instances: { colocated: 2 },
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { param: string } }).error.param).toBe("instances");
    const unknownModel = await postDeployment({
      model: "nope",
      mode: "colocated",
      instances: { colocated: 1 },
    });
    expect(unknownModel.status).toBe(404);
    const asUser = await call("/api/deployments");
    expect(asUser.status).toBe(403);
    const unknownPin = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "lemma-moe", prompt: "Hi", deployment: "dep_nope" }),
    });
    expect(unknownPin.status).toBe(404);
    const d = await createPd("lemma-moe");
    const nTwo = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "lemma-moe", prompt: "Hi", n: 2, deployment: d.id }),
    });
    expect(nTwo.status).toBe(400);
    const listed = (await (await admin("/api/deployments")).json()) as { data: Deployment[] };
    expect(listed.data.map((x) => x.id)).toContain(d.id);
    expect((await admin(`/api/deployments/${d.id}`, { method: "DELETE" })).status).toBe(200);
    expect((await admin(`/api/deployments/${d.id}`)).status).toBe(404);
  });

  for (const which of ["default", "stories"] as const) {
    it.skipIf(which === "stories" && !env.REF_STORIES)(
      `matches colocated output and moves exactly the prompt's KV (${which})`,
      async () => {
        const model = which === "stories" ? await uploadStories() : "lemma-moe";
        const pd = await createPd(model);
        const prompt =
          which === "stories"
            ? "Once upon a time, in a small town, there lived a boy named Tim"
            : "Hello! Who are you? I am a small model";
        const req = { model, prompt, max_tokens: 24, temperature: 0 };
        const all = (await (await admin("/api/deployments")).json()) as {
          data: (Deployment & { model: string })[];
        };
        const coloc = all.data.find((d) => d.model === model && d.mode === "colocated");
        const colocated = await complete({ ...req, deployment: coloc?.id });
        const disaggregated = await complete({ ...req, deployment: pd.id });
        expect(disaggregated.body.choices[0]?.text).toBe(colocated.body.choices[0]?.text);
        expect(disaggregated.body.usage).toEqual(colocated.body.usage);

        const rec = (await (await call(`/api/requests/${disaggregated.id}`)).json()) as {
          status: string;
          jobs: { tasks: { role: string; instanceId: string; npu: string; status: string }[] }[];
        };
        const tasks = rec.jobs[0]?.tasks ?? [];
        expect(tasks.map((t) => t.role).sort()).toEqual(["decode", "prefill"]);
        const prefill = tasks.find((t) => t.role === "prefill");
        const decode = tasks.find((t) => t.role === "decode");
        expect(prefill?.instanceId).not.toBe(decode?.instanceId);

        const pre = env.NPU.getByName(npuName(prefill?.instanceId as string));
        const dec = env.NPU.getByName(npuName(decode?.instanceId as string));
        const [ps, ds] = await Promise.all([pre.stats(), dec.stats()]);
        const nPrompt = disaggregated.body.usage.prompt_tokens;
        const nOut = disaggregated.body.usage.completion_tokens;
        const sum = (s: { recentSteps: { numScheduledTokens: number }[] }) =>
          s.recentSteps.reduce((a, x) => a + x.numScheduledTokens, 0);
        expect(sum(ps)).toBe(nPrompt); // the prefill side computed the prompt, once
        expect(sum(ds)).toBe(nOut - 1); // the decode side computed only generated tokens
        const fabric = await pre.fabricStats();
        // prompt tokens x layers x 2 x KV width x 4 bytes
        const gguf = parseGguf(
          new Uint8Array(which === "stories" ? (env.REF_STORIES as ArrayBuffer) : DEFAULT_MODEL),
        );
        const cfg = modelConfigFromGguf(gguf);
        const expected = nPrompt * cfg.numHiddenLayers * 2 * cfg.numKeyValueHeads * cfg.headDim * 4;
        expect(fabric.counters.durable.bytesWritten).toBe(expected);
        expect(fabric.counters.durable.bytesRead).toBe(expected);
        expect(fabric.counters.durable.liveRegions).toBe(0);
        expect(fabric.regions).toEqual([]);
        expect(ps.numFreeBlocks).toBe(ps.numBlocks);
        expect(ds.numFreeBlocks).toBe(ds.numBlocks);
      },
    );
  }
});

describe("fabric", () => {
  it("keeps durable regions in storage across a restart until freed, and counts bytes", async () => {
    const owner = env.NPU.getByName(`fabric-test/${crypto.randomUUID()}`);
    const bytes = new Uint8Array(2.5 * 2 ** 20).map((_, i) => i % 251);
    const meta = await owner.fabricWrite({ regionId: "r1", kind: "durable", bytes });
    expect(meta.numChunks).toBe(3);
    await owner.fabricWrite({ regionId: "m1", kind: "memory", bytes: new Uint8Array([1, 2, 3]) });
    const rows = await runInDurableObject(owner, async (_o: Npu, state) =>
      state.storage.sql
        .exec(
          "SELECT idx, length(data) AS n FROM fabric_chunks WHERE region_id = 'r1' ORDER BY idx",
        )
        .toArray(),
    );
    expect(rows.map((r) => r.n)).toEqual([2 ** 20, 2 ** 20, 0.5 * 2 ** 20]);
    // restart the owner: memory regions are gone, durable ones are still there
    await runInDurableObject(owner, async (_o: Npu, state) => {
      state.abort("restart for the test");
    }).catch(() => {});
    const again = env.NPU.getByName(owner.id.name ?? "");
    const read = await again.fabricRead({ regionId: "r1" });
    expect(read?.meta.seq).toBe(1);
    expect(read?.bytes.byteLength).toBe(bytes.byteLength);
    expect(read?.bytes[12345]).toBe(12345 % 251);
    expect(await again.fabricRead({ regionId: "m1" })).toBeNull();
    // waiting for a newer version resolves when it is written
    const waiting = again.fabricWait({ regionId: "r1", minSeq: 2, timeoutMs: 2000 });
    await again.fabricWrite({ regionId: "r1", kind: "durable", bytes: new Uint8Array(8) });
    expect(await waiting).toBe(true);
    expect(await again.fabricWait({ regionId: "r1", minSeq: 9, timeoutMs: 10 })).toBe(false);
    expect(await again.fabricFree({ regionId: "r1" })).toBe(true);
    const stats = await again.fabricStats();
    expect(stats.counters.durable.liveRegions).toBe(0);
    expect(stats.counters.durable.numFrees).toBe(1);
  });

  it("frees a KV handoff region that no decode side pulled once it expires", async () => {
    const owner = env.NPU.getByName(`fabric-ttl/${crypto.randomUUID()}`);
    await owner.fabricWrite({ regionId: "kv/task_x", kind: "durable", bytes: new Uint8Array(64) });
    await owner.fabricWrite({ regionId: "other", kind: "durable", bytes: new Uint8Array(8) });
    await runInDurableObject(owner, async (_o: Npu, state) => {
      state.storage.sql.exec("UPDATE fabric_regions SET written_at = 0");
      await state.storage.setAlarm(Date.now() + 60_000);
    });
    expect(await runDurableObjectAlarm(owner)).toBe(true);
    const left = await owner.fabricStats();
    expect(left.regions.map((r) => r.regionId)).toEqual(["other"]);
  });
});
