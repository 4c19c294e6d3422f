// `flowserve logs`: the worker's JSON log lines (shared/log.ts: one object per line with level,
// event, ts, requestId and the event's fields), read from the dev server's output or from
// `wrangler tail --format json`, which wraps each invocation's console calls in one
// pretty-printed object: { "logs": [{ "message": ["<our JSON line>"], "level", ... }],
// "exceptions": [...], "eventTimestamp", ... }. Pure functions, tested in
// test/unit/cli-logs.test.ts.

/** Largest multi-line object we keep collecting before giving up on it (characters). */
const MAX_PENDING = 4 * 2 ** 20;

/**
 * Splits text, fed in chunks of any size, into JSON values: a line that is one JSON object, or
 * a pretty-printed object over several lines (wrangler tail). Other lines (wrangler's own
 * output) are dropped.
 */
export function createJsonSplitter() {
  let partial = "";
  /** Lines of a multi-line object being collected, or null. */
  let pending = null;
  let pendingSize = 0;

  const onLine = (raw) => {
    const line = raw.replace(/\r$/, "");
    if (pending !== null) {
      pending.push(line);
      pendingSize += line.length;
      if (/^\s*}\s*$/.test(line)) {
        try {
          const value = JSON.parse(pending.join("\n"));
          pending = null;
          return [value];
        } catch {
          // an inner object closed: keep collecting
        }
      }
      if (pendingSize > MAX_PENDING) pending = null;
      return [];
    }
    const start = line.indexOf("{");
    if (start < 0) return [];
    const text = line.slice(start);
    if (text.trimEnd().endsWith("}")) {
      try {
        return [JSON.parse(text)];
      } catch {
        // not one object on one line
      }
    }
    if (line.trim() === "{") {
      pending = [line];
      pendingSize = line.length;
    }
    return [];
  };

  return {
    /** @param {string} chunk */
    push(chunk) {
      const lines = (partial + chunk).split("\n");
      partial = lines.pop() ?? "";
      return lines.flatMap(onLine);
    },
    end() {
      const rest = partial;
      partial = "";
      return rest ? onLine(rest) : [];
    },
  };
}

const isObject = (x) => typeof x === "object" && x !== null && !Array.isArray(x);

/** Our log entry from one console argument: the object, or the JSON line it was printed as. */
function entryFrom(x) {
  if (typeof x === "string") {
    const t = x.trim();
    if (!t.startsWith("{")) return null;
    try {
      return entryFrom(JSON.parse(t));
    } catch {
      return null;
    }
  }
  return isObject(x) && typeof x.event === "string" ? x : null;
}

/**
 * The log entries in one JSON value: itself when it is a log line, or the entries inside a
 * `wrangler tail` event (its console messages, and its exceptions as `exception` entries).
 */
export function logEntries(value) {
  const own = entryFrom(value);
  if (own) return [own];
  if (!isObject(value) || !Array.isArray(value.logs)) return [];
  const out = [];
  for (const log of value.logs) {
    const message = isObject(log) && Array.isArray(log.message) ? log.message : [];
    for (const m of message) {
      const e = entryFrom(m);
      if (e) out.push(e);
    }
  }
  for (const x of Array.isArray(value.exceptions) ? value.exceptions : []) {
    out.push({
      level: "error",
      event: "exception",
      ts: isObject(x) && typeof x.timestamp === "number" ? x.timestamp : value.eventTimestamp,
      name: isObject(x) ? x.name : undefined,
      message: isObject(x) ? x.message : String(x),
    });
  }
  return out;
}

/**
 * A filter over log entries in arrival order. `requestId` and `events` compare fields; `model`
 * keeps entries with that `model`, and, since only some events name the model
 * (request.received does, scheduler.decided and task.* do not), every later entry of a request
 * that an earlier entry tied to the model.
 * @param {{ requestId?: string | null, model?: string | null, events?: readonly string[] }} f
 */
export function createLogFilter(f) {
  const requestIdsOfModel = new Set();
  return (entry) => {
    if (f.model) {
      const rid = typeof entry.requestId === "string" ? entry.requestId : null;
      if (entry.model === f.model) {
        if (rid) requestIdsOfModel.add(rid);
      } else if (!(rid && requestIdsOfModel.has(rid))) {
        return false;
      }
    }
    if (f.requestId && entry.requestId !== f.requestId) return false;
    if (f.events && f.events.length > 0 && !f.events.includes(entry.event)) return false;
    return true;
  };
}

function time(ts) {
  const d = new Date(typeof ts === "number" ? ts : Number.NaN);
  return Number.isNaN(d.getTime()) ? "--:--:--.---" : d.toISOString().slice(11, 23);
}

function value(v) {
  if (typeof v === "string") return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/**
 * One line per entry: UTC time, event, requestId (or -), then the other fields as k=v (strings
 * bare unless they hold spaces, quotes or =; objects as JSON). `level` shows only for warn and
 * error.
 */
export function formatEntry(entry) {
  const rest = Object.entries(entry)
    .filter(([k, v]) => !["ts", "event", "requestId", "level"].includes(k) && v !== undefined)
    .map(([k, v]) => `${k}=${value(v)}`);
  const level = entry.level === "warn" || entry.level === "error" ? [`level=${entry.level}`] : [];
  const rid = typeof entry.requestId === "string" ? entry.requestId : "-";
  return [time(entry.ts), entry.event, rid, ...level, ...rest].join(" ");
}
