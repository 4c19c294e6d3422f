/**
 * Continuous batching through the API of one `wrangler dev`: a short request joins a long one
 * that is already decoding and finishes first; the engine's step log shows batches of several
 * sequences; 16 concurrent streams give the same greedy text as each request alone; a client
 * that disconnects cancels its request and the engine stops decoding it.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  ADMIN_KEY,
  type DevServer,
  LOCAL_KEY,
  SYNTHETIC_MODEL,
  startDevServer,
  uploadSyntheticModel,
} from "../helpers/dev-server.ts";
import { HAVE_REFERENCE_MODELS, readReferenceModel } from "../helpers/models.ts";

const STORIES = "stories260k";
/**
 * The concurrent streams' model: stories260K (context 512) writes long greedy stories; without
 * the reference checkpoints, the synthetic MoE (a byte-fallback vocabulary: the prompts are
 * general text, which the embedded lemma model reads as <unk>).
 */
const MODEL = HAVE_REFERENCE_MODELS ? STORIES : SYNTHETIC_MODEL;
/**
 * The join test's model: the synthetic MoE, whose context of 2048 holds a generation long enough
 * (about two seconds of decode steps) that a request sent after its first token joins; the lemma
 * model's context of 512 may end it first.
 */
const JOIN_MODEL = SYNTHETIC_MODEL;
const JOIN_LONG = { max_tokens: 1800, ignore_eos: true };

let server: DevServer;

beforeAll(async () => {
  server = await startDevServer({ LOG_LEVEL: "debug" }); // per-step lines are debug
  if (HAVE_REFERENCE_MODELS) {
    const res = await fetch(`${server.url}/api/models/${STORIES}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
      body: readReferenceModel("stories260K-f32.gguf") as Uint8Array<ArrayBuffer>,
    });
    if (res.status !== 201) throw new Error(`upload failed: ${res.status} ${await res.text()}`);
  }
  await uploadSyntheticModel(server);
  // Load the models before anything is timed.
  for (const model of new Set([MODEL, JOIN_MODEL])) {
    const res = await post("/v1/completions", { model, prompt: "Once", max_tokens: 2 });
    if (res.status !== 200) throw new Error(`warm-up failed: ${res.status} ${await res.text()}`);
  }
});

afterAll(async () => {
  await server?.stop();
});

// ---------------------------------------------------------------------------------------------
// Helpers

type Kind = "chat" | "completion";

interface Req {
  kind: Kind;
  body: Record<string, unknown>;
}

function post(path: string, body: object, signal?: AbortSignal): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
    signal,
  });
}

const pathOf = (kind: Kind) => (kind === "chat" ? "/v1/chat/completions" : "/v1/completions");

interface Chunk {
  choices: {
    index: number;
    text?: string;
    delta?: { content?: string };
    finish_reason: string | null;
  }[];
}

interface StreamResult {
  requestId: string;
  text: string;
  finishReason: string | null;
  numTextChunks: number;
  sawDone: boolean;
}

interface StreamHooks {
  signal?: AbortSignal;
  /** After each chunk that carried text; `n` counts them. */
  onText?: (n: number) => void;
}

/** Streams one request, parsing SSE frames as they arrive. An abort ends it without throwing. */
async function stream(req: Req, hooks: StreamHooks = {}): Promise<StreamResult> {
  const res = await post(pathOf(req.kind), { ...req.body, stream: true }, hooks.signal);
  if (res.status !== 200) throw new Error(`stream: ${res.status} ${await res.text()}`);
  const out: StreamResult = {
    requestId: res.headers.get("x-request-id") ?? "",
    text: "",
    finishReason: null,
    numTextChunks: 0,
    sawDone: false,
  };
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let end = buf.indexOf("\n\n");
      while (end >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        end = buf.indexOf("\n\n");
        const data = block
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trim())
          .join("\n");
        if (!data) continue;
        if (data === "[DONE]") {
          out.sawDone = true;
          continue;
        }
        const chunk = JSON.parse(data) as Chunk & { error?: unknown };
        if (chunk.error) throw new Error(`error frame: ${data}`);
        for (const c of chunk.choices) {
          const piece = c.text ?? c.delta?.content ?? "";
          if (c.finish_reason) out.finishReason = c.finish_reason;
          if (piece) {
            out.text += piece;
            out.numTextChunks++;
            hooks.onText?.(out.numTextChunks);
          }
        }
      }
    }
  } catch (e) {
    if (!hooks.signal?.aborted) throw e;
  }
  return out;
}

/** The same request, not streamed: its text. */
async function once(req: Req): Promise<string> {
  const res = await post(pathOf(req.kind), req.body);
  if (res.status !== 200) throw new Error(`${res.status} ${await res.text()}`);
  const body = (await res.json()) as {
    choices: { text?: string; message?: { content: string } }[];
  };
  const c = body.choices[0];
  return c?.text ?? c?.message?.content ?? "";
}

interface StepLine {
  event: "step.completed";
  ts: number;
  name: string;
  numSeqs: number;
}

/** The Npu's `step.completed` log lines so far, for `model`'s instances. */
/** Engine steps logged by every NPU (the tests in this file run one model at a time). */
function steps(): StepLine[] {
  const out: StepLine[] = [];
  for (const line of server.output().split("\n")) {
    if (!line.startsWith("{") || !line.includes('"step.completed"')) continue;
    try {
      const j = JSON.parse(line) as StepLine;
      if (j.event === "step.completed" && j.name.startsWith("inst_")) out.push(j);
    } catch {
      // a line cut by a concurrent write; the next read has it whole
    }
  }
  return out;
}

interface RecordBody {
  status: string;
  firstTokenAt: number | null;
  finishedAt: number | null;
  jobs: { tasks: { numCompletionTokens: number | null; instanceId: string }[] }[];
}

async function getRecord(id: string): Promise<RecordBody> {
  const res = await fetch(`${server.url}/api/requests/${id}`, {
    headers: { authorization: `Bearer ${LOCAL_KEY}` },
  });
  if (res.status !== 200) throw new Error(`GET /api/requests/${id}: ${res.status}`);
  return (await res.json()) as RecordBody;
}

/** Polls the record until it has `status` and a finish time; fails early on another final status. */
async function waitForStatus(id: string, status: string, timeout = 10_000): Promise<RecordBody> {
  let last: RecordBody | null = null;
  try {
    return await vi.waitUntil(
      async () => {
        last = await getRecord(id);
        if (last.status === status && last.finishedAt !== null) return last;
        if (last.status !== "queued" && last.status !== "running" && last.status !== status) {
          throw new Error(`request ${id} ended "${last.status}", not "${status}"`);
        }
        return false;
      },
      { timeout, interval: 50 },
    );
  } catch (e) {
    const tasks = JSON.stringify((last as RecordBody | null)?.jobs[0]?.tasks ?? null);
    throw new Error(`${(e as Error).message}; want "${status}"; last record tasks: ${tasks}`);
  }
}

// ---------------------------------------------------------------------------------------------

describe("continuous batching", () => {
  it("lets a short request join a running one and finish first", async () => {
    const before = steps().length;
    const events: string[] = [];
    let aStarted!: () => void;
    const aFirstToken = new Promise<void>((resolve) => {
      aStarted = resolve;
    });
    const a = stream(
      {
        kind: "completion",
        body: { model: JOIN_MODEL, prompt: "Once upon a time", temperature: 0, ...JOIN_LONG },
      },
      {
        onText: (n) => {
          if (n === 1) {
            events.push("A:first");
            aStarted();
          }
        },
      },
    ).then((r) => {
      events.push("A:done");
      return r;
    });
    await Promise.race([aFirstToken, a]); // a refused A fails here, not at the test's timeout
    const b = stream(
      {
        kind: "completion",
        body: { model: JOIN_MODEL, prompt: "Tom and Sue", temperature: 0, max_tokens: 8 },
      },
      { onText: (n) => n === 1 && events.push("B:first") },
    ).then((r) => {
      events.push("B:done");
      return r;
    });
    const [ra, rb] = await Promise.all([a, b]);

    expect(ra.sawDone && rb.sawDone).toBe(true);
    expect(ra.finishReason).toBe("length");
    expect(rb.text.length).toBeGreaterThan(0);
    // B was admitted while A was decoding and got its tokens before A ended.
    expect(events[0]).toBe("A:first");
    expect(events.indexOf("B:first")).toBeGreaterThan(0);
    expect(events.indexOf("B:first")).toBeLessThan(events.indexOf("A:done"));
    expect(events.indexOf("B:done")).toBeLessThan(events.indexOf("A:done"));
    // The records agree: B's first token came before A finished.
    const [recA, recB] = await Promise.all([
      waitForStatus(ra.requestId, "succeeded"),
      waitForStatus(rb.requestId, "succeeded"),
    ]);
    expect(recB.firstTokenAt).toBeLessThanOrEqual(recA.finishedAt as number);
    expect(recB.finishedAt).toBeLessThanOrEqual(recA.finishedAt as number);
    // Both ran on the same instance, in shared steps.
    expect(recB.jobs[0]?.tasks[0]?.instanceId).toBe(recA.jobs[0]?.tasks[0]?.instanceId);
    const batched = steps()
      .slice(before)
      .filter((s) => s.numSeqs >= 2);
    expect(batched.length).toBeGreaterThan(0);
  });

  it("gives 16 concurrent streams the same text as each request alone", async () => {
    const prompts = [
      "Once upon a time",
      "Lily wanted",
      "The dog",
      "One day, a little",
      "Tom and Sue",
      "The sun was",
      "Ben had a big red",
      "Once there was a girl who loved",
      "The cat",
      "Mom said",
      "In the park, a boy",
      "Sara and her friend",
    ];
    const chats = ["Tell me a story.", "Hello! Who are you?", "What is a dog?", "Sing a song."];
    const reqs: Req[] = [
      ...prompts.map(
        (prompt): Req => ({
          kind: "completion",
          body: { model: MODEL, prompt, max_tokens: 32, temperature: 0 },
        }),
      ),
      ...chats.map(
        (content): Req => ({
          kind: "chat",
          body: {
            model: MODEL,
            messages: [{ role: "user", content }],
            max_tokens: 32,
            temperature: 0,
          },
        }),
      ),
    ];
    expect(reqs).toHaveLength(16);

    const alone: string[] = [];
    for (const r of reqs) alone.push(await once(r));
    expect(new Set(alone).size).toBeGreaterThan(1);

    const before = steps().length;
    const together = await Promise.all(reqs.map((r) => stream(r)));
    for (const [i, r] of together.entries()) {
      expect(r.sawDone, `request ${i} ended with [DONE]`).toBe(true);
      expect(["stop", "length"]).toContain(r.finishReason);
      expect(r.text, `request ${i}: ${JSON.stringify(reqs[i]?.body)}`).toBe(alone[i]);
    }
    const maxBatch = Math.max(
      ...steps()
        .slice(before)
        .map((s) => s.numSeqs),
    );
    expect(maxBatch).toBeGreaterThanOrEqual(2);
  });
});
