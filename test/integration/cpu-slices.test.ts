/**
 * The engine loop's CPU slices (NPU_SLICE_MS, lowered to 20 ms in this suite): a long
 * generation continues across fresh invocations (the Npu's alarm), and the output is unchanged:
 * a greedy completion that runs beside it equals llama.cpp's reference tokens for the embedded
 * model (test/fixtures/lemma-moe-llama-cpp.json, whose ids spell each problem's answer).
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { npuName } from "../../shared/protocol/names.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import FIXTURE from "../fixtures/lemma-moe-llama-cpp.json";
import { call, post } from "./worker-client.ts";

const REF = FIXTURE.cases[0] as (typeof FIXTURE.cases)[number];

async function instanceOf(id: string): Promise<string> {
  const rec = (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
  return rec.jobs[0]?.tasks[0]?.instanceId as string;
}

describe("engine loop time slices", () => {
  it("continues a long generation from fresh invocations, with the reference output", async () => {
    const long = post("/v1/completions", {
      model: "lemma-moe",
      prompt: "The long road",
      max_tokens: 300,
      ignore_eos: true,
      temperature: 0,
    });
    const ref = post("/v1/completions", {
      model: "lemma-moe",
      prompt: REF.prompt_ids,
      max_tokens: 128,
      temperature: 0,
      logprobs: 0,
    });
    const [longRes, refRes] = await Promise.all([long, ref]);
    expect(longRes.status).toBe(200);
    expect(refRes.status).toBe(200);
    const longBody = (await longRes.json()) as { usage: { completion_tokens: number } };
    expect(longBody.usage.completion_tokens).toBe(300);
    const stats = await env.NPU.getByName(
      npuName(await instanceOf(longRes.headers.get("x-request-id") as string)),
    ).stats();
    expect(stats.numSlices).toBeGreaterThanOrEqual(2);
    // locally the clock moves too: which count ended the slices (the work count is the one a
    // deployed Npu relies on; test/integration/engine-loop-slices.test.ts freezes the clock)
    console.log(JSON.stringify({ numSlices: stats.numSlices, byWork: stats.numSlicesByWork }));
    const refBody = (await refRes.json()) as {
      choices: { text: string; logprobs: { tokens: string[] } }[];
    };
    expect(refBody.choices[0]?.logprobs.tokens).toHaveLength(REF.expected_ids.length);
    // llama.cpp's ids end with EOS, which ends the choice and is not part of its text
    expect(refBody.choices[0]?.text).toBe(REF.answer);
  });
});
