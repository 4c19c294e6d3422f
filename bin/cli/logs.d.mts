/** Types for logs.mjs (plain JS so that `node bin/flowserve.mjs` runs it on Node 20). */
export type LogEntry = Record<string, unknown> & { event: string };
export function createJsonSplitter(): {
  push(chunk: string): unknown[];
  end(): unknown[];
};
export function logEntries(value: unknown): LogEntry[];
export function createLogFilter(f: {
  requestId?: string | null;
  model?: string | null;
  events?: readonly string[];
}): (entry: LogEntry) => boolean;
export function formatEntry(entry: LogEntry): string;
