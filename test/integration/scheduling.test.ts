/**
 * DeepFlow's in-group placement through the API: with load balanced, a request whose prompt
 * shares a cached prefix goes to the instance that holds it and reuses its KV blocks.
 */
import { exports } from "cloudflare:workers";
import { describe, expect, it } from "vitest";

const call = (path: string, init: RequestInit = {}, key = "sk-test") =>
  exports.default.fetch(
    new Request(`http://localhost${path}`, {
      ...init,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    }),
  );

describe("prefix-aware placement", () => {
  it("sends a shared prefix back to the instance that caches it", async () => {
    const res = await call(
      "/api/deployments",
      {
        method: "POST",
        body: JSON.stringify({
          model: "default-moe",
          mode: "colocated",
          instances: { colocated: 3 },
          scheduler: "deepflow",
        }),
      },
      "sk-admin",
    );
    expect(res.status).toBe(201);
    const dep = (await res.json()) as { id: string };
    const prefix = "The fox ran to the river and the bird sang in the tree. ".repeat(4);
    const run = async (tail: string) => {
      const r = await call("/v1/completions", {
        method: "POST",
        body: JSON.stringify({
          model: "default-moe",
          deployment: dep.id,
          prompt: prefix + tail,
          max_tokens: 4,
          temperature: 0,
        }),
      });
      expect(r.status).toBe(200);
      const body = (await r.json()) as {
        usage: { prompt_tokens: number; prompt_tokens_details: { cached_tokens: number } };
      };
      const id = r.headers.get("x-request-id") as string;
      const rec = (await (await call(`/api/requests/${id}`)).json()) as {
        jobs: { tasks: { instanceId: string }[] }[];
      };
      return { usage: body.usage, instanceId: rec.jobs[0]?.tasks[0]?.instanceId };
    };
    const first = await run("Then the fox slept.");
    expect(first.usage.prompt_tokens_details.cached_tokens).toBe(0);
    for (const tail of ["The bird flew home.", "A cat came by.", "It was a good day."]) {
      const next = await run(tail);
      expect(next.instanceId).toBe(first.instanceId);
      expect(next.usage.prompt_tokens_details.cached_tokens).toBeGreaterThanOrEqual(32);
    }
  });
});
