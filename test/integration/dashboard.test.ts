/**
 * The dashboard's routes through the worker: the page without a key, the scheduler's recent
 * decisions and any tenant's request record for admins only.
 */
import { describe, expect, it } from "vitest";
import { admin, call, post } from "./worker-client.ts";

describe("dashboard routes", () => {
  it("serves the page without a key, its script allowed by hash only", async () => {
    const res = await call("/dashboard", {}, "");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/html");
    expect(res.headers.get("content-security-policy")).toMatch(/script-src 'sha256-[^']+'/);
    const html = await res.text();
    expect(html).toContain('id="signin"');
    expect(html).not.toMatch(/<script[^>]+src=/);
  });

  it("lists a placement among the decisions and shows the request to an admin", async () => {
    const res = await post("/v1/completions", {
      model: "lemma-moe",
      prompt: "Hi",
      max_tokens: 2,
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") ?? "";
    const decisions = (await (await admin("/api/scheduler/decisions?limit=5")).json()) as {
      data: { requestId: string; instanceId: string; reason: string }[];
    };
    const d = decisions.data.find((x) => x.requestId === id);
    expect(d?.instanceId).toMatch(/^inst_/);
    expect(decisions.data.length).toBeLessThanOrEqual(5);

    const rec = await admin(`/api/admin/requests/${id}`);
    expect(rec.status).toBe(200);
    const body = (await rec.json()) as { tenant: string; jobs: { tasks: unknown[] }[] };
    expect(body.tenant).toBe("test");
    expect(body.jobs[0]?.tasks).toHaveLength(1);
  });

  it("refuses tenants' keys and answers 404 for unknown ids", async () => {
    expect((await call("/api/scheduler/decisions")).status).toBe(403);
    expect((await call(`/api/admin/requests/req_${"0".repeat(32)}`)).status).toBe(403);
    expect((await admin(`/api/admin/requests/req_${"0".repeat(32)}`)).status).toBe(404);
    expect((await admin("/api/admin/requests/nope")).status).toBe(404);
  });
});
