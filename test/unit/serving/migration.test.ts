/**
 * The worker's splice of a job's attempts (migratingEvents): delivered tokens counted from the
 * deltas, a continuation's finish and usage in the original request's terms, one error when
 * no attempt follows, and the continuation's spec (prompt + delivered, the rest of max tokens).
 */
import { describe, expect, it } from "vitest";
import type { SeqOutput } from "../../../shared/engine/engine.ts";
import { errorInfo } from "../../../shared/errors.ts";
import type { GenerateEvent, GenerateTask, JobSpec } from "../../../shared/protocol/messages.ts";
import {
  continuationSpec,
  instanceFailed,
  isMigratable,
  migratingEvents,
} from "../../../shared/serving/migration.ts";
import { TaskTracker } from "../../../shared/serving/task.ts";
import type { Tokenizer } from "../../../shared/tokenizer/tokenizer.ts";

async function* batches(list: GenerateEvent[][], thenThrow = false) {
  for (const b of list) yield b;
  if (thenThrow) throw new Error("disconnected");
}

const delta = (text: string, tokenIds: number[]): GenerateEvent => ({
  type: "delta",
  index: 0,
  text,
  tokenIds,
  logprobs: null,
});

async function collect(it: AsyncIterable<GenerateEvent[]>): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const b of it) out.push(...b);
  return out;
}

describe("migratingEvents", () => {
  it("continues from the next attempt after an instance failure, in the original's terms", async () => {
    const asked: number[][] = [];
    const events = await collect(
      migratingEvents(
        batches([
          [delta("a", [5]), delta("b", [6, 7])],
          [{ type: "error", error: instanceFailed("hung") }],
        ]),
        async (delivered) => {
          asked.push([...delivered]);
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
      ),
    );
    expect(asked).toEqual([[5, 6, 7]]);
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
      migratingEvents(batches([[delta("a", [5])]], true), async () => {
        calls++;
        return calls === 1 ? batches([[delta("b", [6])]], true) : null;
      }),
    );
    expect(calls).toBe(2);
    expect(events.map((e) => e.type)).toEqual(["delta", "delta", "error"]);
  });

  it("passes other errors through without resuming", async () => {
    const bad = errorInfo("invalid_request", "nope");
    const events = await collect(
      migratingEvents(batches([[{ type: "error", error: bad }]]), async () => {
        throw new Error("must not resume");
      }),
    );
    expect(events).toEqual([{ type: "error", error: bad }]);
  });
});

describe("continuations", () => {
  const task = {
    prompts: [[1, 2, 3]],
    n: 1,
    maxTokens: 10,
    sampling: { stop: [] as string[] },
  } as unknown as Omit<GenerateTask, "taskId">;

  it("prompts with the original ids plus the delivered tokens, for the rest of max tokens", () => {
    const spec = {
      n: 1,
      maxTokens: null,
      input: { kind: "chat", messages: [] },
    } as unknown as JobSpec;
    const c = continuationSpec(spec, task, [7, 8]);
    expect(c.input).toEqual({ kind: "completion", prompts: [[1, 2, 3, 7, 8]] });
    expect(c.maxTokens).toBe(8);
  });

  it("migrates one sequence without stop strings only", () => {
    expect(isMigratable(task)).toBe(true);
    expect(isMigratable({ ...task, n: 2 })).toBe(false);
    expect(isMigratable({ ...task, prompts: [[1], [2]] })).toBe(false);
    expect(isMigratable({ ...task, sampling: { ...task.sampling, stop: ["\n"] } })).toBe(false);
  });
});

describe("TaskTracker deltas", () => {
  it("carry the ids of tokens whose text was held back (a split character) with the text", () => {
    const tracker = new TaskTracker(1, 3, {} as Tokenizer);
    const out = (newTokenIds: number[], text: string): SeqOutput => ({
      seqId: "s",
      newTokenIds,
      text,
      logprobs: [],
      finished: false,
      finishReason: null,
      numPromptTokens: 3,
      numCachedTokens: 0,
      numOutputTokens: 0,
      kvCache: null,
    });
    // byte tokens 0xC3, 0xA9 render "é" only once both arrived
    expect(tracker.onOutput(0, out([200], ""), 0)).toEqual([]);
    expect(tracker.onOutput(0, out([201], "é"), 0)).toEqual([delta("é", [200, 201])]);
    expect(tracker.onOutput(0, out([202], "x"), 0)).toEqual([delta("x", [202])]);
  });
});
