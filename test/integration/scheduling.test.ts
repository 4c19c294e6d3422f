/**
 * DeepFlow's in-group placement through the API: a request whose prompt shares a cached prefix
 * goes to the instance that holds it and reuses its KV blocks, unless that instance's outstanding
 * tokens outweigh the prefill the prefix saves (`placementCost`).
 *
 * It runs on the synthetic model (uploadSyntheticModel): the two streams that keep instances busy
 * decode 1500 tokens so they outlast the placements under test, more than the default lemma
 * model's context of 512 holds.
 */
import { describe, expect, it, vi } from "vitest";
import { call, uploadSyntheticModel } from "./worker-client.ts";

interface DeploymentView {
  id: string;
  instances: { id: string; numRunning: number; numWaiting: number }[];
}

async function createDeployment(model: string): Promise<DeploymentView> {
  const res = await call(
    "/api/deployments",
    {
      method: "POST",
      body: JSON.stringify({
        model,
        mode: "colocated",
        instances: { colocated: 3 },
        scheduler: "deepflow",
      }),
    },
    "sk-admin",
  );
  expect(res.status).toBe(201);
  return (await res.json()) as DeploymentView;
}

async function instanceOf(requestId: string): Promise<string | undefined> {
  const rec = (await (await call(`/api/requests/${requestId}`)).json()) as {
    jobs: { tasks: { instanceId: string }[] }[];
  };
  return rec.jobs[0]?.tasks[0]?.instanceId;
}

describe("prefix-aware placement", () => {
  it("sends a shared prefix back to the instance that caches it", async () => {
    const model = await uploadSyntheticModel();
    const dep = await createDeployment(model);
    const order = dep.instances.map((i) => i.id);
    const body = (prompt: string, extra: object) =>
      JSON.stringify({
        model,
        deployment: dep.id,
        prompt,
        temperature: 0,
        ...extra,
      });

    // two long streams occupy the first two instances (least loaded, in list order) ...
    const busy: ReadableStreamDefaultReader<Uint8Array>[] = [];
    for (const prompt of ["The bird sang.", "A cat came by."]) {
      const r = await call("/v1/completions", {
        method: "POST",
        body: body(prompt, { max_tokens: 1500, ignore_eos: true, stream: true }),
      });
      const reader = (r.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      busy.push(reader);
    }
    // ... so the first request with the prefix lands on the third
    const prefix = "The fox ran to the river and the bird sang in the tree. ".repeat(4);
    const run = async (tail: string) => {
      const r = await call("/v1/completions", {
        method: "POST",
        body: body(prefix + tail, { max_tokens: 4 }),
      });
      expect(r.status).toBe(200);
      const usage = (
        (await r.json()) as { usage: { prompt_tokens_details: { cached_tokens: number } } }
      ).usage;
      return {
        cached: usage.prompt_tokens_details.cached_tokens,
        instanceId: await instanceOf(r.headers.get("x-request-id") as string),
      };
    };
    const first = await run("Then the fox slept.");
    expect(first.instanceId).toBe(order[2]);
    expect(first.cached).toBe(0);

    // once every instance is idle again (balanced), least-loaded would pick the first one;
    // DeepFlow picks the one holding the prefix
    for (const reader of busy) await reader.cancel();
    await vi.waitUntil(
      async () => {
        const d = (await (
          await call(`/api/deployments/${dep.id}`, {}, "sk-admin")
        ).json()) as DeploymentView;
        return d.instances.every((i) => i.numRunning + i.numWaiting === 0);
      },
      { timeout: 5000, interval: 20 },
    );
    // idle and balanced: the prefix decides (least-loaded would break the tie the same way)
    const again = await run("The bird flew home.");
    expect(again.instanceId).toBe(order[2]);
    expect(again.cached).toBeGreaterThanOrEqual(32);
    // with a 300-token stream running there, its outstanding tokens outweigh the prefill the
    // cached prefix would save (placementCost): the request goes to an idle instance instead
    // (the paper's balance test alone, with its 512-token floor, would have kept the prefix)
    const r = await call("/v1/completions", {
      method: "POST",
      body: body(`${prefix}A cat came by.`, { max_tokens: 300, ignore_eos: true, stream: true }),
    });
    const reader = (r.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    const loaded = await run("It was a good day.");
    await reader.cancel();
    expect(loaded.instanceId).not.toBe(order[2]);
    expect(loaded.cached).toBe(0);
  });
});
