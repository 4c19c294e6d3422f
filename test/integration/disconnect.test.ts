/**
 * A client that goes away mid-stream cancels its generation: the worker's next SSE write fails,
 * it cancels the task on the Npu by RPC, the sequence is aborted and its KV blocks are freed.
 */
import { describe, expect, it, vi } from "vitest";
import { call } from "./worker-client.ts";

interface InstanceStats {
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numBlocks: number;
  numTasks: number;
}

/** Facts in the lemma model's character vocabulary: one token each, after BOS. */
const PROMPT = "a=1;b=2;c=3;";
/** The rest of the lemma model's context of 512 tokens (prompt plus BOS), so the generation is as long as it can be. */
const MAX_TOKENS = 512 - (PROMPT.length + 1);

async function instances(): Promise<InstanceStats[]> {
  const res = await call("/api/models/lemma-moe/instances", {}, "sk-admin");
  return ((await res.json()) as { data: InstanceStats[] }).data;
}

describe("client disconnect", () => {
  it("cancels the task and frees its KV blocks", async () => {
    const res = await call("/v1/completions", {
      method: "POST",
      body: JSON.stringify({
        model: "lemma-moe",
        prompt: PROMPT,
        max_tokens: MAX_TOKENS,
        ignore_eos: true,
        stream: true,
      }),
    });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    await reader.read();
    await reader.read();
    const busy = await instances();
    expect(busy[0]?.numRunning).toBe(1);
    expect(busy[0]?.numFreeBlocks).toBeLessThan(busy[0]?.numBlocks as number);
    await reader.cancel();

    const status = async () =>
      (await (await call(`/api/requests/${id}`)).json()) as {
        status: string;
        jobs: { tasks: { numCompletionTokens: number }[] }[];
      };
    await vi.waitUntil(async () => (await status()).status === "cancelled", {
      timeout: 5000,
      interval: 20,
    });
    const rec = await status();
    expect(rec.jobs[0]?.tasks[0]?.numCompletionTokens).toBeLessThan(MAX_TOKENS);
    const idle = await instances();
    expect(idle[0]).toMatchObject({ numRunning: 0, numWaiting: 0, numTasks: 0 });
    expect(idle[0]?.numFreeBlocks).toBe(idle[0]?.numBlocks);
  });
});
