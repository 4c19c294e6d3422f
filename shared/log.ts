/**
 * Structured logging: one JSON object per line, readable in `wrangler dev`, `wrangler tail` and
 * jq. The only place in the project that calls console. Never log prompts or generated text
 * (lengths only).
 */

export type LogLevel = "debug" | "info" | "warn" | "error";
const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export class Logger {
  constructor(
    private readonly context: LogFields = {},
    private readonly level: LogLevel = "info",
  ) {}

  child(fields: LogFields): Logger {
    return new Logger({ ...this.context, ...fields }, this.level);
  }

  debug(event: string, fields?: LogFields): void {
    this.emit("debug", event, fields);
  }
  info(event: string, fields?: LogFields): void {
    this.emit("info", event, fields);
  }
  warn(event: string, fields?: LogFields): void {
    this.emit("warn", event, fields);
  }
  error(event: string, fields?: LogFields): void {
    this.emit("error", event, fields);
  }

  private emit(level: LogLevel, event: string, fields?: LogFields): void {
    if (RANK[level] < RANK[this.level]) return;
    const line = JSON.stringify({ level, event, ts: Date.now(), ...this.context, ...fields });
    if (level === "error") console.error(line);
    else if (level === "warn") console.warn(line);
    else console.log(line);
  }
}

export function parseLogLevel(s: string | undefined): LogLevel {
  return s === "debug" || s === "warn" || s === "error" ? s : "info";
}

/** An error as log fields (name and message; the stack only where asked). */
export function errorFields(e: unknown, withStack = false): LogFields {
  if (e instanceof Error) {
    return {
      error: { name: e.name, message: e.message, ...(withStack ? { stack: e.stack } : {}) },
    };
  }
  return { error: { name: "NonError", message: String(e) } };
}
