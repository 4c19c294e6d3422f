/**
 * The restart drill the issue began with: `wrangler dev` is killed while a request streams, and
 * started again on the same persisted state. The request's record must not stay `running`: the
 * restarted JobExecutor's watchdog finds its task gone from its Npu and fails it, with the
 * reason (or the worker saw the client go first and cancelled it), within a bound
 * (LOST_AFTER_MS, then RESUME_WAIT_MS during which the failure is held for a resume that no
 * worker sends, plus a few watchdog rounds). A request after the restart is served as before.
 */
import { afterAll, describe, expect, it, vi } from "vitest";
import { RESUME_WAIT_MS } from "../../shared/serving/migration.ts";
import { LOST_AFTER_MS } from "../../shared/serving/watchdog.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import {
  type DevServer,
  LOCAL_KEY,
  startDevServer,
  uploadSyntheticModel,
} from "../helpers/dev-server.ts";

const servers: DevServer[] = [];

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

const headers = { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" };

/** A completion, by default on the embedded default model. */
const complete = (s: DevServer, body: object) =>
  fetch(`${s.url}/v1/completions`, {
    method: "POST",
    headers,
    body: JSON.stringify({ model: "lemma-moe", ...body }),
  });

describe("server restart", () => {
  it("ends the record of a request cut off by a restart", async () => {
    const first = await startDevServer();
    servers.push(first);
    const greedy = { prompt: "a=1;b=2;Q04W1F2G1", max_tokens: 8, temperature: 0 };
    const before = (
      (await (await complete(first, greedy)).json()) as { choices: { text: string }[] }
    ).choices[0]?.text;
    // the cut-off request runs on the synthetic model: its context of 2048 leaves room for a
    // generation that outlasts stopping the server (the lemma model's 512 may end first)
    const model = await uploadSyntheticModel(first);
    const res = await complete(first, {
      model,
      prompt: "A very long tale",
      max_tokens: 1500,
      ignore_eos: true,
      stream: true,
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read(); // it runs
    await first.stop();
    await reader.cancel().catch(() => {});

    const second = await startDevServer({}, first.state);
    servers.push(second);
    const restartedAt = Date.now();
    let rec: RequestRecord | null = null;
    await vi.waitUntil(
      async () => {
        const r = await fetch(`${second.url}/api/requests/${id}`, { headers });
        rec = (await r.json()) as RequestRecord;
        return rec.status !== "queued" && rec.status !== "running";
      },
      { timeout: LOST_AFTER_MS + RESUME_WAIT_MS + 10_000, interval: 100 },
    );
    const ended = rec as unknown as RequestRecord;
    // wrangler's SIGTERM may close the client's connection before workerd dies: the worker then
    // records the disconnect (cancelled) itself; otherwise the restarted watchdog fails the task
    expect(["failed", "cancelled"]).toContain(ended.status);
    if (ended.status === "failed") expect(ended.error).toMatch(/lost the task/);
    expect(ended.jobs[0]?.tasks.every((t) => t.status === ended.status)).toBe(true);
    console.log(
      JSON.stringify({ drill: "restart", endedAfterRestartMs: Date.now() - restartedAt }),
    );
    const after = (
      (await (await complete(second, greedy)).json()) as { choices: { text: string }[] }
    ).choices[0]?.text;
    expect(after).toBe(before);
  });
});
