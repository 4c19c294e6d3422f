import { describe, expect, it } from "vitest";
import {
  createJsonSplitter,
  createLogFilter,
  formatEntry,
  type LogEntry,
  logEntries,
} from "../../bin/cli/logs.mjs";

const RID = "req_0123456789abcdef0123456789abcdef";
const OTHER = "req_ffffffffffffffffffffffffffffffff";

const received = {
  level: "info",
  event: "request.received",
  ts: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
  requestId: RID,
  kind: "completion",
  model: "s260k",
  tenant: "local",
};
const decided = {
  level: "info",
  event: "scheduler.decided",
  ts: received.ts + 5,
  do: "JobExecutor",
  requestId: RID,
  instanceId: "inst_dep_1_c_0",
  reason: "prefix",
};
const finished = {
  level: "info",
  event: "task.finished",
  ts: received.ts + 40,
  requestId: RID,
  status: "succeeded",
  ttftMs: 3,
  durationMs: 14,
};

/** What `wrangler tail --format json` prints for one invocation: pretty JSON, 4 spaces. */
function tailEvent(lines: object[], exceptions: object[] = []): string {
  return JSON.stringify(
    {
      outcome: "ok",
      scriptName: "flowserve",
      diagnosticsChannelEvents: [],
      exceptions,
      logs: lines.map((l) => ({
        message: [JSON.stringify(l)],
        level: "log",
        timestamp: (l as { ts: number }).ts,
      })),
      eventTimestamp: received.ts,
      event: { request: { url: "https://fs.example.dev/v1/completions", method: "POST" } },
    },
    null,
    4,
  );
}

function entriesOf(text: string, chunkSize = text.length): LogEntry[] {
  const split = createJsonSplitter();
  const values: unknown[] = [];
  for (let i = 0; i < text.length; i += chunkSize) {
    values.push(...split.push(text.slice(i, i + chunkSize)));
  }
  values.push(...split.end());
  return values.flatMap(logEntries);
}

describe("log input", () => {
  it("reads the dev server's one-object lines and skips wrangler's own lines", () => {
    const text = [
      "⎔ Starting local server...",
      "[wrangler:info] Ready on http://127.0.0.1:8787",
      JSON.stringify(received),
      "[wrangler:info] POST /v1/completions 200 OK (40ms)",
      JSON.stringify(finished),
      "{ not json",
      JSON.stringify({ some: "object without an event" }),
    ].join("\n");
    expect(entriesOf(text).map((e) => e.event)).toEqual(["request.received", "task.finished"]);
  });

  it("unwraps wrangler tail's pretty-printed events, whatever the chunk boundaries", () => {
    const text = `${tailEvent([received, decided])}\n${tailEvent([finished])}\n`;
    for (const size of [text.length, 7, 1]) {
      const got = entriesOf(text, size);
      expect(got.map((e) => e.event)).toEqual([
        "request.received",
        "scheduler.decided",
        "task.finished",
      ]);
      expect(got[1]).toEqual(decided);
    }
  });

  it("turns a tail event's exceptions into error entries and ignores plain console text", () => {
    const ev = JSON.parse(
      tailEvent([received], [{ name: "Error", message: "boom", timestamp: 9 }]),
    );
    ev.logs.push({ message: ["plain text", 42], level: "log", timestamp: 1 });
    expect(logEntries(ev)).toEqual([
      received,
      { level: "error", event: "exception", ts: 9, name: "Error", message: "boom" },
    ]);
  });

  it("handles a last line without a newline", () => {
    expect(entriesOf(JSON.stringify(finished)).map((e) => e.event)).toEqual(["task.finished"]);
  });
});

describe("log filter", () => {
  const otherReceived = { ...received, requestId: OTHER, model: "lemma-moe" };
  const otherFinished = { ...finished, requestId: OTHER };
  const modelLoaded = { level: "info", event: "model.loaded", ts: 1, model: "s260k" };
  const stream = [received, otherReceived, decided, modelLoaded, otherFinished, finished];

  it("keeps one request's entries", () => {
    const keep = createLogFilter({ requestId: RID });
    expect(stream.filter(keep)).toEqual([received, decided, finished]);
  });

  it("keeps the named events only", () => {
    const keep = createLogFilter({ events: ["task.finished", "scheduler.decided"] });
    expect(stream.filter(keep)).toEqual([decided, otherFinished, finished]);
  });

  it("follows a model's requests into events that do not name the model", () => {
    const keep = createLogFilter({ model: "s260k" });
    expect(stream.filter(keep)).toEqual([received, decided, modelLoaded, finished]);
    const other = createLogFilter({ model: "lemma-moe" });
    expect(stream.filter(other)).toEqual([otherReceived, otherFinished]);
  });

  it("combines filters", () => {
    const keep = createLogFilter({ model: "s260k", events: ["task.finished"] });
    expect(stream.filter(keep)).toEqual([finished]);
    expect(stream.filter(createLogFilter({}))).toEqual(stream);
  });
});

describe("formatEntry", () => {
  it("prints time, event and request id, then the other fields as k=v", () => {
    expect(formatEntry(received)).toBe(
      `03:04:05.678 request.received ${RID} kind=completion model=s260k tenant=local`,
    );
  });

  it("quotes strings with spaces, writes objects as JSON, and shows level only when it matters", () => {
    const e = {
      level: "warn",
      event: "task.report_failed",
      ts: received.ts,
      taskId: "task_1",
      error: { name: "Error", message: "a b" },
      note: "two words",
      n: null,
    };
    expect(formatEntry(e)).toBe(
      '03:04:05.678 task.report_failed - level=warn taskId=task_1 error={"name":"Error","message":"a b"} note="two words" n=null',
    );
  });
});
