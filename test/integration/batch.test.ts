/**
 * DeepFlow's batch-inference job kind through the API: POST /api/requests runs one job per item in
 * the JobExecutor's background queue; GET shows each job's result; DELETE cancels; a restarted
 * JobExecutor resumes the queue from SQLite.
 */

import { runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it, vi } from "vitest";
import type { BatchJobSpec } from "../../durable-objects/batch-runner.ts";
import { GREEDY_SAMPLING } from "../helpers/sampling.ts";
import { call } from "./worker-client.ts";

const submit = (body: unknown, key?: string) =>
  call("/api/requests", { method: "POST", body: JSON.stringify(body) }, key);

interface Job {
  id: string;
  kind: string;
  status: string;
  index: number;
  startedAt: number | null;
  finishedAt: number | null;
  tasks: { status: string; error: string | null }[];
  result: {
    object: string;
    choices: { text?: string; message?: { content: string } }[];
  } | null;
  error: { message: string; type: string } | null;
}

interface BatchRecord {
  id: string;
  kind: string;
  status: string;
  receivedAt: number;
  finishedAt: number | null;
  jobs: Job[];
  jobCounts: Record<string, number>;
}

async function record(id: string, key?: string): Promise<BatchRecord> {
  const res = await call(`/api/requests/${id}`, {}, key);
  expect(res.status).toBe(200);
  return (await res.json()) as BatchRecord;
}

async function until(id: string, done: (r: BatchRecord) => boolean, timeout = 30_000) {
  let last: BatchRecord | null = null;
  await vi.waitUntil(
    async () => {
      last = await record(id);
      return done(last);
    },
    { timeout, interval: 50 },
  );
  return last as unknown as BatchRecord;
}

async function expectError(res: Response, status: number, param?: string) {
  expect(res.status).toBe(status);
  const body = (await res.json()) as { error: { param: string | null; type: string } };
  if (param !== undefined) expect(body.error.param).toBe(param);
  return body.error;
}

const text = (r: Job["result"]) => {
  const c = r?.choices[0];
  return c?.message ? c.message.content : c?.text;
};

const ITEMS = [
  { messages: [{ role: "user", content: "Hello! Who are you?" }], max_tokens: 12 },
  { prompt: "Once upon a time", max_tokens: 10 },
  { model: "lemma-moe", messages: [{ role: "user", content: "Tell me a story." }] },
  { prompt: "The fox ran to the river", max_tokens: 8, n: 2 },
  { messages: [{ role: "user", content: "Hi" }], max_tokens: 6 },
].map((item) => ({ ...item, temperature: 0 }));

describe("batch requests", () => {
  it("runs one job per item and stores each response body", async () => {
    const res = await submit({ kind: "batch", model: "lemma-moe", requests: ITEMS });
    expect(res.status).toBe(202);
    const id = res.headers.get("x-request-id") as string;
    expect(await res.json()).toEqual({
      id,
      object: "request",
      status: "queued",
      kind: "batch",
      num_jobs: 5,
    });
    const rec = await until(id, (r) => r.status === "succeeded");
    expect(rec.kind).toBe("batch");
    expect(rec.jobCounts).toMatchObject({ total: 5, succeeded: 5 });
    expect(rec.jobs.map((j) => j.index)).toEqual([0, 1, 2, 3, 4]);
    expect(rec.jobs.map((j) => j.kind)).toEqual([
      "chat.completion",
      "text_completion",
      "chat.completion",
      "text_completion",
      "chat.completion",
    ]);
    for (const [i, job] of rec.jobs.entries()) {
      expect(job.status).toBe("succeeded");
      expect(job.error).toBeNull();
      // each job ran inside the request's lifetime: received <= started <= finished <= request done
      const times = [rec.receivedAt, job.startedAt, job.finishedAt, rec.finishedAt];
      expect(times).toEqual([
        expect.any(Number),
        expect.any(Number),
        expect.any(Number),
        expect.any(Number),
      ]);
      expect([...(times as number[])].sort((x, y) => x - y)).toEqual(times);
      expect(job.tasks).toHaveLength(1);
      const item = ITEMS[i] as Record<string, unknown>;
      const route = "messages" in item ? "/v1/chat/completions" : "/v1/completions";
      const direct = (await (
        await call(route, {
          method: "POST",
          body: JSON.stringify({ model: "lemma-moe", ...item }),
        })
      ).json()) as Job["result"];
      expect(job.result?.object).toBe(direct?.object);
      expect(job.result?.choices).toHaveLength(direct?.choices.length ?? 0);
      expect(text(job.result)).toBe(text(direct));
      expect(job.result?.choices.map((c) => c.text ?? c.message?.content)).toEqual(
        direct?.choices.map((c) => c.text ?? c.message?.content),
      );
    }
    // a finished request cannot be cancelled
    const again = await call(`/api/requests/${id}`, { method: "DELETE" });
    await expectError(again, 409);
  });

  it("validates every item with the /v1 schemas", async () => {
    const batch = (requests: unknown[], extra: object = {}) =>
      submit({ kind: "batch", model: "lemma-moe", requests, ...extra });
    const ok = { prompt: "Hi", max_tokens: 2 };
    await expectError(
      await batch([ok, ok, ok, { ...ok, temperature: 9 }]),
      400,
      "requests.3.temperature",
    );
    await expectError(await batch([ok, { ...ok, stream: true }]), 400, "requests.1.stream");
    await expectError(await batch([]), 400, "requests");
    await expectError(await batch([{ max_tokens: 2 }]), 400, "requests.0");
    await expectError(await batch([{ ...ok, model: "other" }]), 400, "requests.0.model");
    await expectError(
      await batch([{ messages: [{ role: "wizard", content: "x" }] }]),
      400,
      "requests.0.messages.0.role",
    );
    await expectError(await batch(Array(1001).fill(ok)), 400, "requests");
    await expectError(await batch([ok], { kind: "other" }), 400, "kind");
    await expectError(await batch([ok], { model: "nope" }), 404, "model");
  });

  it("keeps batch requests per tenant", async () => {
    const res = await submit({
      kind: "batch",
      model: "lemma-moe",
      requests: [{ prompt: "Hi", max_tokens: 2 }],
    });
    const id = res.headers.get("x-request-id") as string;
    await expectError(await call(`/api/requests/${id}`, {}, "sk-other"), 404);
    await expectError(await call(`/api/requests/${id}`, { method: "DELETE" }, "sk-other"), 404);
    await until(id, (r) => r.status === "succeeded");
    await expectError(await call("/api/requests/req_nope", { method: "DELETE" }), 404);
  });

  it("cancels queued and running jobs, once", async () => {
    const item = { prompt: "Once upon a time", max_tokens: 200, ignore_eos: true };
    const res = await submit({
      kind: "batch",
      model: "lemma-moe",
      requests: Array.from({ length: 30 }, () => item),
    });
    expect(res.status).toBe(202);
    const id = res.headers.get("x-request-id") as string;
    await until(id, (r) => r.jobs.some((j) => j.status === "running"));
    const del = await call(`/api/requests/${id}`, { method: "DELETE" });
    expect(del.status).toBe(200);
    const cancelled = (await del.json()) as BatchRecord;
    expect(cancelled.status).toBe("cancelled");
    expect(cancelled.jobs.filter((j) => j.status === "cancelled").length).toBeGreaterThan(20);
    expect(cancelled.jobs.some((j) => j.status === "queued" || j.status === "running")).toBe(false);
    await expectError(await call(`/api/requests/${id}`, { method: "DELETE" }), 409);
    // the cancelled tasks are gone from the instance, and nothing more is started
    await vi.waitUntil(
      async () => {
        const stats = (await (
          await call("/api/models/lemma-moe/instances", {}, "sk-admin")
        ).json()) as { data: { numTasks: number }[] };
        return stats.data.every((s) => s.numTasks === 0);
      },
      { timeout: 10_000, interval: 50 },
    );
    const rec = await record(id);
    expect(rec.status).toBe("cancelled");
    expect(rec.jobCounts.cancelled).toBe(cancelled.jobCounts.cancelled);
    expect(rec.jobs.filter((j) => j.tasks.length > 0).length).toBeLessThan(30);
  });

  it("resumes its queue after the JobExecutor restarts", async () => {
    // A batch as a JobExecutor that died left it in SQLite: one job dispatched (its task running
    // on an instance), one still queued. A fresh isolate has no jobs in flight, so its watchdog
    // alarm runs the dispatched job again and then the queued one.
    const je = env.JOB_EXECUTOR.getByName("je/0");
    const hex = () => crypto.randomUUID().replaceAll("-", "");
    const requestId = `req_${hex()}`;
    const jobIds = [`job_${hex()}`, `job_${hex()}`];
    const spec = (jobId: string): BatchJobSpec => ({
      jobId,
      kind: "completion",
      input: { kind: "completion", prompts: ["Once upon a time"] },
      n: 1,
      maxTokens: 8,
      sampling: { ...GREEDY_SAMPLING, ignoreEos: true },
    });
    await runInDurableObject(je, async (_instance, state) => {
      const sql = state.storage.sql;
      const now = Date.now();
      sql.exec(
        "INSERT INTO requests (id, tenant, model, kind, status, received_at, queued_at, started_at) VALUES (?, 'test', 'lemma-moe', 'batch', 'running', ?, ?, ?)",
        requestId,
        now,
        now,
        now,
      );
      jobIds.forEach((jobId, idx) => {
        const dispatched = idx === 0;
        sql.exec(
          "INSERT INTO jobs (id, request_id, kind, status, queued_at) VALUES (?, ?, 'text_completion', ?, ?)",
          jobId,
          requestId,
          dispatched ? "running" : "queued",
          now,
        );
        sql.exec(
          "INSERT INTO batch_jobs (job_id, request_id, idx, state, attempts, spec) VALUES (?, ?, ?, ?, ?, ?)",
          jobId,
          requestId,
          idx,
          dispatched ? "dispatched" : "queued",
          dispatched ? 1 : 0,
          JSON.stringify(spec(jobId)),
        );
      });
      sql.exec(
        "INSERT INTO tasks (id, job_id, request_id, role, status, instance_id, npu, queued_at) VALUES (?, ?, ?, 'colocated', 'running', 'inst_gone', 'inst_gone/npu/0', ?)",
        `task_${hex()}`,
        jobIds[0],
        requestId,
        now - 1,
      );
      await state.storage.setAlarm(now + 60_000);
    });
    expect(await runDurableObjectAlarm(je)).toBe(true);
    const rec = await until(requestId, (r) => r.status === "succeeded");
    expect(rec.jobCounts).toMatchObject({ total: 2, succeeded: 2 });
    expect(text(rec.jobs[0]?.result ?? null)).toBe(text(rec.jobs[1]?.result ?? null));
    expect(rec.jobs[0]?.tasks.map((t) => t.status)).toEqual(["failed", "succeeded"]);
    expect(rec.jobs[0]?.tasks[0]?.error).toBe("job executor restarted");
    expect(rec.jobs[1]?.tasks).toHaveLength(1);
  });
});
