/**
 * Request migration of every request shape (shared/serving/migration.ts): `n > 1` (chat, seeded
 * sampling), several prompts with n = 2, and stop strings. For each, streamed and not, an Npu
 * reset mid-generation (`drop_state`, what production does past 128 MB) makes the job continue on
 * the other instance, and the client gets exactly the no-fault response: each choice's text, its
 * finish reason, its logprob tokens (with logprobs asked for) and the usage. Then the migration state surviving a JobExecutor reset: the
 * JobExecutor is reset under a stream, then the stream's Npu: the restarted JobExecutor rebuilds
 * the job from its records and the stream continues equal to its no-fault output.
 */
import { env } from "cloudflare:workers";
import { beforeAll, describe, expect, it, vi } from "vitest";
import DEFAULT_MODEL from "../../models/lemma-moe.gguf";
import { npuName } from "../../shared/protocol/names.ts";
import { LOST_AFTER_MS } from "../../shared/serving/watchdog.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import { parseSse } from "../helpers/sse.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

const MODEL = "shapes";

async function record(id: string): Promise<RequestRecord> {
  return (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
}

async function ended(id: string): Promise<RequestRecord> {
  let rec: RequestRecord | null = null;
  await vi.waitUntil(
    async () => {
      rec = await record(id);
      return rec.status !== "queued" && rec.status !== "running";
    },
    { timeout: LOST_AFTER_MS + 10_000, interval: 50 },
  );
  return rec as unknown as RequestRecord;
}

/** The instance running the request's task once its first token is out. */
async function runningOn(id: string): Promise<string> {
  let instance = "";
  await vi.waitUntil(
    async () => {
      const task = (await record(id)).jobs[0]?.tasks[0];
      instance = task?.instanceId ?? "";
      return task?.firstTokenAt != null;
    },
    { timeout: 10_000, interval: 5 },
  );
  return instance;
}

/** The deployment's instance that runs a task and has stepped 5 times since it was seen. */
async function busyInstance(): Promise<string> {
  const d = (await (await admin(`/api/deployments/${deployment}`)).json()) as {
    serving: { colocated: string[] };
  };
  const seen = new Map<string, number>();
  let victim = "";
  await vi.waitUntil(
    async () => {
      for (const inst of d.serving.colocated) {
        const h = await env.NPU.getByName(npuName(inst)).health();
        if (h.taskIds.length === 0) continue;
        const first = seen.get(inst) ?? h.numSteps;
        seen.set(inst, first);
        if (h.numSteps >= first + 5) victim = inst;
      }
      return victim !== "";
    },
    { timeout: 10_000, interval: 2 },
  );
  return victim;
}

async function dropState(instance: string): Promise<void> {
  const res = await call(
    "/api/faults",
    { method: "POST", body: JSON.stringify({ target: "npu", instance, fault: "drop_state" }) },
    "sk-admin",
  );
  expect(res.status).toBe(200);
}

/** What a response says, per choice, and its usage: streamed or not, the same shape. */
interface Outcome {
  texts: string[];
  /** Each choice's logprob tokens, in order (none repeated or lost across the join). */
  logprobTokens: string[][];
  finishReasons: (string | null)[];
  completionTokens: number | null;
  promptTokens: number | null;
}

interface Choice {
  index: number;
  logprobs?: { tokens?: string[]; content?: { token: string }[] } | null;
  text?: string;
  message?: { content: string };
  delta?: { content?: string };
  finish_reason: string | null;
}
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
}

function logprobTokensOf(c: Choice): string[] {
  return c.logprobs?.tokens ?? c.logprobs?.content?.map((x) => x.token) ?? [];
}

function fromJson(body: { choices: Choice[]; usage: Usage }): Outcome {
  const choices = [...body.choices].sort((a, b) => a.index - b.index);
  return {
    texts: choices.map((c) => c.text ?? c.message?.content ?? ""),
    logprobTokens: choices.map(logprobTokensOf),
    finishReasons: choices.map((c) => c.finish_reason),
    completionTokens: body.usage.completion_tokens,
    promptTokens: body.usage.prompt_tokens,
  };
}

function fromSse(text: string, numChoices: number): Outcome & { errors: object[]; done: boolean } {
  const events = parseSse(text);
  const out: Outcome = {
    texts: Array.from({ length: numChoices }, () => ""),
    logprobTokens: Array.from({ length: numChoices }, () => []),
    finishReasons: Array.from({ length: numChoices }, () => null),
    completionTokens: null,
    promptTokens: null,
  };
  const errors: object[] = [];
  for (const e of events) {
    if (e === "[DONE]") continue;
    if ("error" in e) errors.push(e);
    const chunk = e as { choices?: Choice[]; usage?: Usage | null };
    for (const c of chunk.choices ?? []) {
      out.texts[c.index] += c.text ?? c.delta?.content ?? "";
      out.logprobTokens[c.index]?.push(...logprobTokensOf(c));
      if (c.finish_reason) out.finishReasons[c.index] = c.finish_reason;
    }
    if (chunk.usage) {
      out.completionTokens = chunk.usage.completion_tokens;
      out.promptTokens = chunk.usage.prompt_tokens;
    }
  }
  return { ...out, errors, done: events.at(-1) === "[DONE]" };
}

let deployment = "";

/**
 * One drill: the no-fault response, then the same request with the instance reset once its
 * first token is out; the outcome must be the same, and the record show the migration.
 */
async function drill(
  name: string,
  path: string,
  body: object,
  numChoices: number,
  stream: boolean,
) {
  const req = { ...body, model: MODEL, deployment };
  const clean = await post(path, req);
  expect(clean.status).toBe(200);
  const expected = fromJson((await clean.json()) as { choices: Choice[]; usage: Usage });
  // with logprobs asked for, one entry per generated token: the comparison below has substance
  if ("logprobs" in body) {
    expect(expected.logprobTokens.flat().length).toBe(expected.completionTokens);
  }
  const res = post(
    path,
    stream ? { ...req, stream, stream_options: { include_usage: true } } : req,
  );
  let id = "";
  let got: Outcome;
  let injectedAt = 0;
  if (stream) {
    const r = await res;
    expect(r.status).toBe(200);
    id = r.headers.get("x-request-id") as string;
    const text = r.text();
    const victim = await runningOn(id);
    injectedAt = Date.now();
    await dropState(victim);
    const { errors, done, ...s } = fromSse(await text, numChoices);
    expect(errors).toEqual([]);
    expect(done).toBe(true);
    got = s;
  } else {
    // the request id comes with the response: the victim is the instance that runs a task,
    // once its loop has stepped a few times since
    const victim = await busyInstance();
    injectedAt = Date.now();
    await dropState(victim);
    const r = await res;
    expect(r.status).toBe(200);
    id = r.headers.get("x-request-id") as string;
    got = fromJson((await r.json()) as { choices: Choice[]; usage: Usage });
  }
  expect(got).toEqual(expected);
  const rec = await ended(id);
  expect(rec.status).toBe("succeeded");
  const tasks = rec.jobs[0]?.tasks ?? [];
  expect(tasks.length).toBeGreaterThanOrEqual(2); // it did migrate
  expect(tasks[0]?.status).toBe("failed");
  expect(tasks.at(-1)?.status).toBe("succeeded");
  expect(tasks.at(-1)?.instanceId).not.toBe(tasks[0]?.instanceId);
  console.log(
    JSON.stringify({
      drill: `migrate ${name}${stream ? " streamed" : ""}`,
      recoveredAfterMs: (tasks.at(-1)?.firstTokenAt as number) - injectedAt,
    }),
  );
}

beforeAll(async () => {
  expect((await admin(`/api/models/${MODEL}`, { method: "PUT", body: DEFAULT_MODEL })).status).toBe(
    201,
  );
  const dep = (await (
    await postDeployment({
      model: MODEL,
      mode: "colocated",
      instances: { colocated: 2 },
      min_instances: 2,
    })
  ).json()) as { id: string };
  deployment = dep.id;
}, 60_000);

const N_CHAT = {
  messages: [{ role: "user", content: "Tell me a story about a cat." }],
  n: 3,
  temperature: 0.9,
  seed: 123,
  logprobs: true,
  max_tokens: 150,
  ignore_eos: true,
};
const PROMPTS = {
  prompt: ["Once upon a time", "The dog ran", "In a small town"],
  n: 2,
  temperature: 0.8,
  seed: 9,
  max_tokens: 100,
  ignore_eos: true,
};
const STOP_BASE = {
  prompt: "The long road home",
  logprobs: 1,
  temperature: 0.7,
  seed: 31,
  max_tokens: 400,
  ignore_eos: true,
};

/**
 * A stop string that first occurs late in the output without it (so the fault comes first); the
 * tiny model repeats itself, so it takes a long one.
 */
async function lateStop(): Promise<string[]> {
  const res = await post("/v1/completions", { ...STOP_BASE, model: MODEL, deployment });
  const text = ((await res.json()) as { choices: { text: string }[] }).choices[0]?.text as string;
  // long: a long stop string holds back more text, which the fault may catch held back
  for (let len = 24; len <= 120; len++) {
    for (let at = Math.floor(text.length * 0.3); at < text.length - len; at++) {
      const stop = text.slice(at, at + len);
      if (text.indexOf(stop) > text.length * 0.3) return [stop, "\u0001never"];
    }
  }
  throw new Error(`no late stop string in the output: ${JSON.stringify(text)}`);
}

describe("migration of every request shape", () => {
  for (const stream of [true, false]) {
    const how = stream ? "streamed" : "not streamed";
    it(`n = 3 chat choices, seeded sampling (${how})`, async () => {
      await drill("n=3", "/v1/chat/completions", N_CHAT, 3, stream);
    });
    it(`three prompts with n = 2 (${how})`, async () => {
      await drill("3 prompts x n=2", "/v1/completions", PROMPTS, 6, stream);
    });
    it(`stop strings (${how})`, async () => {
      const stop = await lateStop();
      await drill("stop", "/v1/completions", { ...STOP_BASE, stop }, 1, stream);
    });
  }

  it("survives a JobExecutor reset: the restarted one rebuilds the job from its records", async () => {
    const req = { ...STOP_BASE, model: MODEL, deployment, max_tokens: 300 };
    const expected = fromJson(
      (await (await post("/v1/completions", req)).json()) as { choices: Choice[]; usage: Usage },
    );
    const res = await post("/v1/completions", { ...req, stream: true });
    expect(res.status).toBe(200);
    const id = res.headers.get("x-request-id") as string;
    const text = res.text();
    const victim = await runningOn(id);
    const reset = await call(
      "/api/faults",
      { method: "POST", body: JSON.stringify({ target: "job_executor", fault: "drop_state" }) },
      "sk-admin",
    );
    expect(reset.status).toBe(200);
    await dropState(victim);
    const s = fromSse(await text, 1);
    expect(s.errors).toEqual([]);
    expect(s.done).toBe(true);
    expect(s.texts).toEqual(expected.texts);
    const rec = await ended(id);
    expect(rec.status).toBe("succeeded");
    expect(rec.jobs[0]?.tasks.map((t) => t.status)).toEqual(["failed", "succeeded"]);
    // the restarted object's watchdog and alarm run without the tracking it had in memory
    expect(
      await env.JOB_EXECUTOR.getByName("je/0").getRequestAnyTenant({ requestId: id }),
    ).not.toBe(null);
  });
});
