/**
 * The worker's splice of a job's attempts (migratingEvents): delivered tokens counted per choice
 * from the deltas, only unfinished choices continued, a continuation's finish and usage in the
 * original request's terms, one error when no attempt follows; the continuation's spec (each
 * choice's prompt + its delivered tokens, its rest of max tokens, its original choice index) and
 * the sequences an Npu makes of it.
 */
import { describe, expect, it } from "vitest";
import { errorInfo } from "../../../shared/errors.ts";
import type {
  DeliveredChoice,
  GenerateEvent,
  GenerateTask,
  JobSpec,
} from "../../../shared/protocol/messages.ts";
import {
  continuationSpec,
  continuationTask,
  instanceFailed,
  migratingEvents,
} from "../../../shared/serving/migration.ts";
import { sequencesFor } from "../../../shared/serving/task.ts";

async function* batches(list: GenerateEvent[][], thenThrow = false) {
  for (const b of list) yield b;
  if (thenThrow) throw new Error("disconnected");
}

const delta = (text: string, tokenIds: number[], index = 0): GenerateEvent => ({
  type: "delta",
  index,
  text,
  tokenIds,
  logprobs: null,
});

const ONE = { numChoices: 1, numPromptTokens: 10 };

async function collect(it: AsyncIterable<GenerateEvent[]>): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const b of it) out.push(...b);
  return out;
}

describe("migratingEvents", () => {
  it("continues from the next attempt after an instance failure, in the original's terms", async () => {
    const asked: DeliveredChoice[][] = [];
    const events = await collect(
      migratingEvents(
        batches([
          [delta("a", [5]), delta("b", [6, 7])],
          [{ type: "error", error: instanceFailed("hung") }],
        ]),
        async (choices) => {
          asked.push(choices);
          // the continuation's prompt is 10 + 3 tokens; it generates 2 more
          return batches([
            [delta("c", [8]), delta("d", [9])],
            [
              { type: "finish", index: 0, finishReason: "length", numOutputTokens: 2 },
              {
                type: "usage",
                promptTokens: 13,
                completionTokens: 2,
                totalTokens: 15,
                cachedTokens: 13,
              },
            ],
          ]);
        },
        ONE,
      ),
    );
    expect(asked).toEqual([[{ index: 0, tokenIds: [5, 6, 7] }]]);
    expect(events.filter((e) => e.type === "delta").map((e) => e.text)).toEqual([
      "a",
      "b",
      "c",
      "d",
    ]);
    expect(events.filter((e) => e.type === "error")).toEqual([]);
    expect(events.at(-2)).toEqual({
      type: "finish",
      index: 0,
      finishReason: "length",
      numOutputTokens: 5,
    });
    expect(events.at(-1)).toEqual({
      type: "usage",
      promptTokens: 10,
      completionTokens: 5,
      totalTokens: 15,
      cachedTokens: 10,
    });
  });

  it("resumes a stream that throws, and ends with exactly one error when none follows", async () => {
    let calls = 0;
    const events = await collect(
      migratingEvents(
        batches([[delta("a", [5])]], true),
        async () => {
          calls++;
          return calls === 1 ? batches([[delta("b", [6])]], true) : null;
        },
        ONE,
      ),
    );
    expect(calls).toBe(2);
    expect(events.map((e) => e.type)).toEqual(["delta", "delta", "error"]);
  });

  it("passes other errors through without resuming", async () => {
    const bad = errorInfo("invalid_request", "nope");
    const events = await collect(
      migratingEvents(
        batches([[{ type: "error", error: bad }]]),
        async () => {
          throw new Error("must not resume");
        },
        ONE,
      ),
    );
    expect(events).toEqual([{ type: "error", error: bad }]);
  });

  it("continues only the unfinished choices of n > 1, each from its own delivered tokens", async () => {
    const asked: DeliveredChoice[][] = [];
    const events = await collect(
      migratingEvents(
        batches([
          [delta("a", [5], 0), delta("x", [9], 1), delta("y", [8, 7], 2)],
          [{ type: "finish", index: 1, finishReason: "stop", numOutputTokens: 1 }],
          [delta("b", [6], 0), { type: "error", error: instanceFailed("lost") }],
          [delta("never", [1], 0)],
        ]),
        async (choices) => {
          asked.push(choices);
          return batches([
            [delta("c", [4], 0), delta("z", [3], 2)],
            [
              { type: "finish", index: 0, finishReason: "length", numOutputTokens: 1 },
              { type: "finish", index: 2, finishReason: "length", numOutputTokens: 1 },
              // the continuation's own terms: its prompts carry the delivered tokens
              { type: "usage", promptTokens: 30, completionTokens: 2, totalTokens: 32 },
            ],
          ]);
        },
        { numChoices: 3, numPromptTokens: 20 },
      ),
    );
    expect(asked).toEqual([
      [
        { index: 0, tokenIds: [5, 6] },
        { index: 2, tokenIds: [8, 7] },
      ],
    ]);
    const text = (i: number) =>
      events
        .filter((e) => e.type === "delta" && e.index === i)
        .map((e) => (e.type === "delta" ? e.text : ""))
        .join("");
    expect([text(0), text(1), text(2)]).toEqual(["abc", "x", "yz"]);
    const finishes = events.filter((e) => e.type === "finish");
    expect(finishes.map((e) => [e.index, e.numOutputTokens])).toEqual([
      [1, 1],
      [0, 3],
      [2, 3],
    ]);
    expect(events.at(-1)).toEqual({
      type: "usage",
      promptTokens: 20,
      completionTokens: 7,
      totalTokens: 27,
    });
  });
});

describe("continuations", () => {
  const task = {
    prompts: [[1, 2, 3]],
    n: 1,
    maxTokens: 10,
    stripLeadingSpace: true,
    sampling: { stop: [] as string[] },
  } as unknown as Omit<GenerateTask, "taskId">;
  const spec = {
    n: 1,
    maxTokens: null,
    input: { kind: "chat", messages: [] },
  } as unknown as JobSpec;

  it("prompts with the original ids plus the delivered tokens, for the rest of max tokens", () => {
    const c = continuationSpec(spec, task, [{ index: 0, tokenIds: [7, 8] }]);
    expect(c.input).toEqual({ kind: "completion", prompts: [[1, 2, 3, 7, 8]] });
    expect(c.maxTokens).toBe(10);
    expect(c.continues).toEqual([{ index: 0, numDelivered: 2 }]);
  });

  it("runs each continued choice of several prompts and n as its own sequence", () => {
    // prompts [1,2] and [3], n = 2: choices 0,1 of the first prompt, 2,3 of the second
    const multi = { ...task, prompts: [[1, 2], [3]], n: 2 };
    const c = continuationSpec({ ...spec, n: 2 }, multi, [
      { index: 1, tokenIds: [7] },
      { index: 2, tokenIds: [] },
      { index: 3, tokenIds: [9, 9, 9] },
    ]);
    expect(c.n).toBe(1);
    expect(c.input).toEqual({ kind: "completion", prompts: [[1, 2, 7], [3], [3, 9, 9, 9]] });
    // what the JobExecutor plans from it (prompts as given, continues copied)
    const planned = {
      ...multi,
      n: 1,
      stripLeadingSpace: false,
      prompts: c.input.kind === "completion" ? (c.input.prompts as number[][]) : [],
      continues: c.continues,
    } as Omit<GenerateTask, "taskId">;
    const seqs = sequencesFor({ ...continuationTask(planned, multi), taskId: "t" }).seqs;
    expect(
      seqs.map((q) => [q.index, q.promptIds, q.params.maxTokens, q.stripLeadingSpace]),
    ).toEqual([
      [1, [1, 2, 7], 9, false],
      [2, [3], 10, true], // nothing delivered yet: a chat answer still drops its leading space
      [3, [3, 9, 9, 9], 7, false],
    ]);
  });
});
