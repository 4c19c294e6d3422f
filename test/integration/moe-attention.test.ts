/**
 * moe-attention in workerd, at the DO level: attention Npus (no expert weights) and Expert DOs
 * (only their experts, read by R2 range reads) joined by A2E/E2A RPCs, stepped in lockstep by
 * attention rank 0. Greedy output equals a colocated Npu's for concurrent tasks on two attention
 * ranks, with one micro-batch per rank or two that ping-pong, and resident weight bytes and the
 * bytes read from R2 are measured on each side.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import { lemmaProblem } from "../../shared/eval/lemma-chain.ts";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../shared/model/config.ts";
import { isExpertTensor } from "../../shared/model/expert-shard.ts";
import { primaryMap } from "../../shared/moe/expert-map.ts";
import type { MoeGroupSpec } from "../../shared/protocol/moe.ts";
import { expertName, npuName } from "../../shared/protocol/names.ts";
import { Tokenizer } from "../../shared/tokenizer/tokenizer.ts";
import { greedyTask, tokensOf } from "./npu-tasks.ts";
import { admin, call, postDeployment } from "./worker-client.ts";

const PROMPTS = ["Once upon a time", "The little dog", "Hello there", "A cat sat"];
const MAX_TOKENS = 6;

const task = (model: string, id: string, prompt: number[]) =>
  greedyTask(model, id, prompt, MAX_TOKENS);

describe.skipIf(!env.REF_QWEN3MOE)("moe-attention across DOs", () => {
  it("serves tiny-qwen3moe with 2 attention Npus and 2 Expert DOs exactly as colocated", async () => {
    const model = "moe-qwen";
    const bytes = new Uint8Array(env.REF_QWEN3MOE as ArrayBuffer);
    await env.MODELS.put(`models/${model}.gguf`, bytes);
    const file = parseGguf(bytes);
    const config = modelConfigFromGguf(file);
    const tok = Tokenizer.fromGguf(file.metadata);
    const prompts = PROMPTS.map((p) => tok.encode(p));

    const colocated = env.NPU.getByName(npuName("moe-ref", 0));
    const want = await Promise.all(
      prompts.map((p, i) => tokensOf(colocated, task(model, `ref${i}`, p))),
    );

    const spec: MoeGroupSpec = {
      instanceId: "moe-test",
      model,
      r2Key: `models/${model}.gguf`,
      numAttention: 2,
      numExperts: 2,
      map: primaryMap(config.numHiddenLayers, config.numExperts, 2),
      timeoutMs: 20_000,
    };
    const experts = [0, 1].map((j) => env.EXPERT.getByName(expertName(spec.instanceId, j)));
    const attention = [0, 1].map((a) => env.NPU.getByName(npuName(spec.instanceId, a)));
    const loadedE = await Promise.all(experts.map((e, j) => e.configure({ spec, rank: j })));
    const loadedA = await Promise.all(
      attention.map((n, a) => n.attentionConfigure({ spec, rank: a })),
    );
    // two tasks on each attention rank, all at once
    const got = await Promise.all(
      prompts.map((p, i) => tokensOf(attention[i % 2]!, task(model, `moe${i}`, p))),
    );
    expect(got).toEqual(want);
    expect(got.map((r) => r.completionTokens)).toEqual(prompts.map(() => MAX_TOKENS));

    // measured weights: experts hold the expert tensors between them, attention ranks none
    let expertBytes = 0;
    for (const t of file.tensors.values())
      if (isExpertTensor(t.name)) expertBytes += t.numElements * 4;
    const eBytes = loadedE.map((r) => (r.ok ? r.value.residentWeightBytes : -1));
    expect(eBytes.reduce((a, b) => a + b, 0)).toBe(expertBytes);
    const colo = await colocated.stats();
    // bytes read from R2: attention ranks fetched the header and every tensor but the experts,
    // expert ranks exactly the stored bytes of the experts they hold
    let storedExpertBytes = 0;
    let otherTensorBytes = 0;
    for (const t of file.tensors.values()) {
      if (isExpertTensor(t.name)) storedExpertBytes += t.numBytes;
      else otherTensorBytes += t.numBytes;
    }
    for (const r of loadedA) {
      if (!r.ok) throw new Error(r.error.message);
      // what a colocated Npu holds, less exactly the experts
      expect(r.value.residentWeightBytes + expertBytes).toBe(colo.memory?.residentWeightBytes);
      const headerAndPadding = r.value.weightBytesRead - otherTensorBytes;
      expect(headerAndPadding).toBeGreaterThanOrEqual(file.dataOffset);
      // the header probe (32 KiB, doubled until the header parses: it ends before the first
      // expert tensor) plus alignment padding between tensors read in one range
      const probe = Math.max(32 * 1024, 2 * file.dataOffset);
      const firstExpert = Math.min(
        ...[...file.tensors.values()].filter((t) => isExpertTensor(t.name)).map((t) => t.offset),
      );
      expect(probe).toBeLessThan(firstExpert);
      expect(headerAndPadding).toBeLessThan(probe + file.tensors.size * file.alignment);
    }
    const eRead = loadedE.map((r) => (r.ok ? r.value.weightBytesRead : -1));
    expect(eRead.reduce((a, b) => a + b, 0)).toBe(storedExpertBytes);
    const es = await Promise.all(experts.map((e) => e.stats()));
    const served = es.map((s) => s?.tokenCounts.flat().reduce((a, b) => a + b, 0) ?? 0);
    expect(served.every((n) => n > 0)).toBe(true);
    const comm = await attention[1]!.moeComm();
    expect(comm.length).toBeGreaterThan(0);
    expect(comm.every((c) => c.messagesSent === 2)).toBe(true); // a part to each expert rank

    // the same with two ping-ponging micro-batches per attention rank (MOE_MICRO_BATCHES=2)
    const pp: MoeGroupSpec = { ...spec, instanceId: "moe-test-pp", microBatches: 2 };
    const ppAttention = [0, 1].map((a) => env.NPU.getByName(npuName(pp.instanceId, a)));
    await Promise.all(
      [0, 1].map((j) =>
        env.EXPERT.getByName(expertName(pp.instanceId, j)).configure({ spec: pp, rank: j }),
      ),
    );
    for (const [a, n] of ppAttention.entries()) {
      const r = await n.attentionConfigure({ spec: pp, rank: a });
      expect(r.ok).toBe(true);
    }
    const ppGot = await Promise.all(
      prompts.map((p, i) => tokensOf(ppAttention[i % 2]!, task(model, `pp${i}`, p))),
    );
    expect(ppGot).toEqual(want);
    // a task of two sequences runs them in one step: one per micro-batch, as colocated would
    const pair = (id: string) => ({
      ...task(model, id, prompts[0]!),
      prompts: prompts.slice(0, 2),
    });
    expect(await tokensOf(ppAttention[0]!, pair("pp-pair"))).toEqual(
      await tokensOf(colocated, pair("ref-pair")),
    );
    // both micro-batches' exchange steps (even and odd) carried tokens
    const ppComm = await ppAttention[0]!.moeComm();
    const carried = new Set(ppComm.filter((c) => c.payloadBytesSent > 0).map((c) => c.step % 2));
    expect([...carried].sort()).toEqual([0, 1]);
  });

  it("POST /api/deployments mode moe-attention serves the default model like colocated", async () => {
    expect((await call("/v1/models")).status).toBe(200); // registers the default model
    const bad = await postDeployment({
      model: "lemma-moe",
      mode: "moe-attention",
      instances: { colocated: 1 },
    });
    expect(bad.status).toBe(400);
    const tooMany = await postDeployment({
      model: "lemma-moe",
      mode: "moe-attention",
      instances: { attention: 1, experts: 16 },
    });
    expect(tooMany.status).toBe(400);
    const res = await postDeployment({
      model: "lemma-moe",
      mode: "moe-attention",
      instances: { attention: 2, experts: 2 },
    });
    expect(res.status).toBe(201);
    const dep = (await res.json()) as {
      id: string;
      mode: string;
      instances: { role: string; rank: number; loaded: boolean; residentWeightBytes: number }[];
    };
    expect(dep.instances.map((i) => `${i.role}/${i.rank}`)).toEqual([
      "attention/0",
      "attention/1",
      "expert/0",
      "expert/1",
    ]);
    expect(dep.instances.every((i) => i.loaded && i.residentWeightBytes > 0)).toBe(true);
    const all = (await (await admin("/api/deployments")).json()) as {
      data: { id: string; model: string; mode: string }[];
    };
    const coloc = all.data.find((d) => d.model === "lemma-moe" && d.mode === "colocated");
    // lemma-chain problems: prompts of the default model's own vocabulary
    const prompts = [0, 1, 2, 3].map((i) => `${lemmaProblem(5, i).prompt}>`);
    const run = (deployment: string | undefined) =>
      Promise.all(
        prompts.map(async (prompt) => {
          const r = await call("/v1/completions", {
            method: "POST",
            body: JSON.stringify({
              model: "lemma-moe",
              prompt,
              max_tokens: 12,
              temperature: 0,
              deployment,
            }),
          });
          expect(r.status).toBe(200);
          const id = r.headers.get("x-request-id") as string;
          const body = (await r.json()) as { choices: { text: string }[] };
          return { id, text: body.choices[0]?.text };
        }),
      );
    const want = await run(coloc?.id);
    const got = await run(dep.id);
    expect(got.map((g) => g.text)).toEqual(want.map((w) => w.text));
    const rec = (await (await call(`/api/requests/${got[0]?.id}`)).json()) as {
      jobs: { tasks: { role: string; status: string }[] }[];
    };
    expect(rec.jobs[0]?.tasks.map((t) => t.role)).toEqual(["attention"]);
    // both attention ranks dispatched tokens of their own (DP balancing spread the tasks)
    const instanceId = (dep.instances[0] as unknown as { id: string }).id;
    for (const rank of [0, 1]) {
      const comm = await env.NPU.getByName(npuName(instanceId, rank)).moeComm();
      expect(
        comm.some((c) => c.payloadBytesSent > 0),
        `rank ${rank}`,
      ).toBe(true);
    }
    // the comm counters through the API: every attention rank sent a part to each expert rank
    // per (layer, step), and the expert ranks received them
    const comm = (await (await admin(`/api/deployments/${dep.id}/comm`)).json()) as {
      data: {
        role: string;
        rank: number;
        steps: { messagesSent: number; messagesReceived: number }[];
      }[];
    };
    expect(comm.data.map((r) => `${r.role}/${r.rank}`)).toEqual([
      "attention/0",
      "attention/1",
      "expert/0",
      "expert/1",
    ]);
    for (const r of comm.data.filter((x) => x.role === "attention")) {
      expect(r.steps.length).toBeGreaterThan(0);
      expect(r.steps.every((s) => s.messagesSent === 2)).toBe(true);
    }
    for (const r of comm.data.filter((x) => x.role === "expert")) {
      expect(r.steps.every((s) => s.messagesReceived === 2)).toBe(true);
    }
    expect((await admin(`/api/deployments/${dep.id}`, { method: "DELETE" })).status).toBe(200);
  });

  it("keeps the moe-attention routes admin-only", async () => {
    for (const [path, method] of [
      ["/api/deployments/dep_x/experts", "GET"],
      ["/api/deployments/dep_x/comm", "GET"],
      ["/api/deployments/dep_x/rebalance", "POST"],
    ] as const) {
      expect((await call(path, { method })).status).toBe(403);
      expect((await admin(path, { method })).status).toBe(404);
    }
  });

  it("EPLB through the API: imbalance at GET .../experts falls after POST .../rebalance", async () => {
    expect((await call("/v1/models")).status).toBe(200);
    const res = await postDeployment({
      model: "lemma-moe",
      mode: "moe-attention",
      instances: { attention: 2, experts: 4 },
    });
    expect(res.status).toBe(201);
    const dep = (await res.json()) as { id: string };
    // a skewed workload: the same prompt eight times routes every copy to the same experts; the
    // prompt (BOS and 12 characters) is shorter than one 16-token KV block, so the second run
    // reuses no cached prefix and does the same expert work as the first
    const run = () =>
      Promise.all(
        Array.from({ length: 8 }, async () => {
          const r = await call("/v1/completions", {
            method: "POST",
            body: JSON.stringify({
              model: "lemma-moe",
              prompt: "a=1;b=2;c=3;",
              max_tokens: 8,
              temperature: 0,
              ignore_eos: true,
              deployment: dep.id,
            }),
          });
          expect(r.status).toBe(200);
          return ((await r.json()) as { choices: { text: string }[] }).choices[0]?.text;
        }),
      );
    interface View {
      mapVersion: number;
      imbalance: number;
      layers: { rankTokens: number[] }[];
    }
    const experts = async () =>
      (await (await admin(`/api/deployments/${dep.id}/experts`)).json()) as View;
    const before = await run();
    const v1 = await experts();
    expect(v1.mapVersion).toBe(1);
    expect(v1.layers.length).toBeGreaterThan(0);
    expect(v1.imbalance).toBeGreaterThan(1.2);
    const rb = await admin(`/api/deployments/${dep.id}/rebalance`, { method: "POST" });
    expect(rb.status).toBe(200);
    expect(await rb.json()).toMatchObject({ fromVersion: 1, toVersion: 2 });
    const after = await run();
    expect(after).toEqual(before);
    const v2 = await experts();
    expect(v2.mapVersion).toBe(2);
    expect(v2.imbalance).toBeLessThan(v1.imbalance);
    const total = (v: View) => v.layers.flatMap((l) => l.rankTokens).reduce((a, b) => a + b, 0);
    expect(total(v2)).toBe(total(v1)); // the same work, spread over the replicas
    expect((await admin("/api/deployments/dep_nope/experts")).status).toBe(404);
    expect((await admin(`/api/deployments/${dep.id}`, { method: "DELETE" })).status).toBe(200);
  });

  it("rebalances on its own when the imbalance stays above the threshold", async () => {
    expect((await call("/v1/models")).status).toBe(200);
    const res = await postDeployment({
      model: "lemma-moe",
      mode: "moe-attention",
      instances: { attention: 2, experts: 4 },
    });
    expect(res.status).toBe(201);
    const dep = (await res.json()) as { id: string };
    // identical sequences decoding 150 tokens: over 128 group steps (two checks, 64 apart), each
    // step routing every token of a layer to the same two experts
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const r = await call("/v1/completions", {
          method: "POST",
          body: JSON.stringify({
            model: "lemma-moe",
            prompt: "a=1;b=2;c=3;",
            max_tokens: 150,
            temperature: 0,
            ignore_eos: true,
            deployment: dep.id,
          }),
        });
        expect(r.status).toBe(200);
        await r.json();
      }),
    );
    await vi.waitFor(
      async () => {
        const v = (await (await admin(`/api/deployments/${dep.id}/experts`)).json()) as {
          mapVersion: number;
          numRebalances: number;
        };
        expect(v.mapVersion).toBeGreaterThanOrEqual(2);
        expect(v.numRebalances).toBeGreaterThanOrEqual(1);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect((await admin(`/api/deployments/${dep.id}`, { method: "DELETE" })).status).toBe(200);
  });
});
