/**
 * One request's timeline as Gantt rows for the dashboard: the request, its jobs and their tasks,
 * each with queued, prefill and decode spans and first-token and finish marks. Pure; no I/O.
 */
import type { RequestRecord, TaskRecord } from "../types/records.ts";

export type SpanKind = "queued" | "prefill" | "decode" | "running";

export interface Span {
  kind: SpanKind;
  /** Epoch ms. */
  fromAt: number;
  toAt: number;
}

export interface TimelineMark {
  kind: "first-token" | "finish";
  at: number;
}

export interface TimelineRow {
  kind: "request" | "job" | "task";
  id: string;
  /** What the row is: the request's kind, the task's role and instance. */
  label: string;
  status: string;
  spans: Span[];
  marks: TimelineMark[];
}

export interface Timeline {
  startAt: number;
  endAt: number;
  rows: TimelineRow[];
}

interface Times {
  queuedAt: number | null;
  startedAt: number | null;
  firstTokenAt: number | null;
  finishedAt: number | null;
}

/**
 * Spans of one record: queued until it started, then prefill until the first token and decode
 * until it finished (a PD prefill task is all prefill, a decode task all decode; a job or request
 * is one running span). Unfinished spans end at `nowAt`.
 */
function spansOf(t: Times, run: "split" | SpanKind, nowAt: number): Span[] {
  const spans: Span[] = [];
  const end = t.finishedAt ?? nowAt;
  if (t.queuedAt !== null)
    spans.push({ kind: "queued", fromAt: t.queuedAt, toAt: t.startedAt ?? end });
  if (t.startedAt === null) return spans;
  if (run !== "split") {
    spans.push({ kind: run, fromAt: t.startedAt, toAt: end });
  } else if (t.firstTokenAt === null) {
    spans.push({ kind: "prefill", fromAt: t.startedAt, toAt: end });
  } else {
    spans.push({ kind: "prefill", fromAt: t.startedAt, toAt: t.firstTokenAt });
    spans.push({ kind: "decode", fromAt: t.firstTokenAt, toAt: end });
  }
  return spans;
}

function marksOf(t: Times): TimelineMark[] {
  const marks: TimelineMark[] = [];
  if (t.firstTokenAt !== null) marks.push({ kind: "first-token", at: t.firstTokenAt });
  if (t.finishedAt !== null) marks.push({ kind: "finish", at: t.finishedAt });
  return marks;
}

function taskRun(task: TaskRecord): "split" | SpanKind {
  if (task.role === "prefill") return "prefill";
  if (task.role === "decode") return "decode";
  return task.role === "colocated" ? "split" : "running";
}

/** The request's rows in order (request, then each job followed by its tasks) and their extent. */
export function requestTimeline(r: RequestRecord, nowAt: number): Timeline {
  const rows: TimelineRow[] = [
    {
      kind: "request",
      id: r.id,
      label: `request ${r.kind}`,
      status: r.status,
      // a request runs from its arrival: its queued time is the job's
      spans: [{ kind: "running", fromAt: r.receivedAt, toAt: r.finishedAt ?? nowAt }],
      marks: marksOf(r),
    },
  ];
  for (const job of r.jobs) {
    rows.push({
      kind: "job",
      id: job.id,
      label: "job",
      status: job.status,
      spans: spansOf(job, "running", nowAt),
      marks: marksOf(job),
    });
    for (const task of job.tasks) {
      rows.push({
        kind: "task",
        id: task.id,
        label: `${task.role} on ${task.instanceId}`,
        status: task.status,
        spans: spansOf(task, taskRun(task), nowAt),
        marks: marksOf(task),
      });
    }
  }
  let startAt = r.receivedAt;
  let endAt = r.receivedAt;
  for (const row of rows) {
    for (const s of row.spans) {
      startAt = Math.min(startAt, s.fromAt);
      endAt = Math.max(endAt, s.toAt);
    }
    for (const m of row.marks) endAt = Math.max(endAt, m.at);
  }
  return { startAt, endAt, rows };
}
