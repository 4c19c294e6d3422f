/**
 * With NPU_MEMORY_BUDGET_MB at 24 (this project's binding), a seeded MoE checkpoint of 16 wide
 * experts (scripts/big-moe.ts on the default lemma model: 3 layers of dim 64, so experts of
 * width 1536 make about 27 MiB of F16 expert weights) exceeds one NPU: the upload is accepted
 * without a colocated deployment, a colocated deployment is refused with a 400 that names the
 * memory needed, and a moe-attention deployment (2 attention Npus, 4 Expert DOs, each within the
 * budget) serves it with the greedy output of the engine run in one large arena.
 */
import { describe, expect, it } from "vitest";
import { kernelsModule } from "../../durable-objects/kernels-module.ts";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { buildBigMoe } from "../../scripts/big-moe.ts";
import { createInstance } from "../../shared/engine/instance.ts";
import { GREEDY } from "../../shared/engine/sequence.ts";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { isExpertTensor } from "../../shared/model/expert-shard.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../../shared/model/kernels-wasm.ts";
import { admin, call, postDeployment } from "../integration/worker-client.ts";

describe("a model no single NPU can hold", () => {
  it("is refused colocated and served as moe-attention", async () => {
    const bytes = buildBigMoe(new Uint8Array(DEFAULT_MODEL), {
      name: "big-moe-ci",
      numExperts: 16,
      expertFf: 1536,
      topK: 2,
      seed: 11,
    });
    const up = await admin("/api/models/big", { method: "PUT", body: bytes });
    expect(up.status).toBe(201);
    const model = (await (await admin("/api/models")).json()) as {
      data: { name: string; deployments: unknown[]; summary: { memoryNeededBytes: number } }[];
    };
    const rec = model.data.find((m) => m.name === "big");
    expect(rec?.deployments).toEqual([]); // no colocated deployment was made for it
    expect(rec?.summary.memoryNeededBytes).toBeGreaterThan(24 * 2 ** 20);

    const colocated = await postDeployment({
      model: "big",
      mode: "colocated",
      instances: { colocated: 1 },
    });
    expect(colocated.status).toBe(400);
    const err = ((await colocated.json()) as { error: { message: string; code: string } }).error;
    expect(err.code).toBe("model_too_large");
    expect(err.message).toMatch(/needs \d+\.\d MiB in one NPU but the NPU budget is 24\.0 MiB/);
    const noDeployment = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({ model: "big", prompt: "a=1;", max_tokens: 2 }),
    });
    expect(noDeployment.status).toBe(503);

    const res = await postDeployment({
      model: "big",
      mode: "moe-attention",
      instances: { attention: 2, experts: 4 },
    });
    expect(res.status).toBe(201);
    const dep = (await res.json()) as {
      id: string;
      instances: { role: string; residentWeightBytes: number; weightBytesRead: number }[];
    };
    for (const i of dep.instances) expect(i.residentWeightBytes).toBeLessThan(24 * 2 ** 20);
    // each rank read from R2 only what it holds: attention ranks the header and every tensor
    // but the experts, expert ranks their experts (together, every expert once)
    const tensors = [...parseGguf(bytes).tensors.values()];
    const expertStored = tensors.reduce((a, t) => a + (isExpertTensor(t.name) ? t.numBytes : 0), 0);
    const otherStored = tensors.reduce((a, t) => a + (isExpertTensor(t.name) ? 0 : t.numBytes), 0);
    const byRole = (role: string) => dep.instances.filter((i) => i.role === role);
    for (const i of byRole("attention")) {
      expect(i.weightBytesRead).toBeGreaterThan(otherStored);
      expect(i.weightBytesRead).toBeLessThan(otherStored + 2 ** 20);
    }
    expect(byRole("expert").reduce((a, i) => a + i.weightBytesRead, 0)).toBe(expertStored);

    // the engine in one arena without the budget
    const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
    const inst = createInstance(bytes, createWasmKernels(wasm, 128 * 2 ** 20), { maxNumSeqs: 4 });
    // prompts in the lemma model's character vocabulary (which the big model keeps)
    const prompts = ["a=1;b=2;c=3;Q04W1F2G1>", "a=7;b=0;"];
    for (const prompt of prompts) {
      const ids: number[] = [];
      inst.engine.add(prompt, inst.tokenizer.encode(prompt), {
        ...GREEDY,
        maxTokens: 8,
        ignoreEos: true,
      });
      while (inst.engine.hasWork()) {
        for (const o of (await inst.engine.step()).outputs) ids.push(...o.newTokenIds);
      }
      const r = await call("/v1/completions", {
        method: "POST",
        body: JSON.stringify({
          model: "big",
          prompt,
          max_tokens: 8,
          temperature: 0,
          ignore_eos: true,
          deployment: dep.id,
        }),
      });
      expect(r.status).toBe(200);
      const body = (await r.json()) as { choices: { text: string }[] };
      expect(body.choices[0]?.text).toBe(inst.tokenizer.decode(ids, { stripLeadingSpace: false }));
    }
  });
});
