/**
 * Raw request bodies parsed against a zod schema, with zod's issues turned into OpenAI-style
 * errors: `parseJsonBody` (raw text -> typed body, or an `ErrorInfo` whose `param` is the
 * offending field path) and `parseValueAt` (a value inside an already parsed body, e.g. one item
 * of a batch, with the path prefixed). No routing, no I/O.
 */
import type { z } from "zod";
import { type ErrorInfo, errorInfo } from "../../shared/errors.ts";

export type ParseResult<T> = { ok: true; value: T } | { ok: false; error: ErrorInfo };

const MALFORMED_JSON =
  "We could not parse the JSON body of your request. The API expects a JSON payload, " +
  "but what was sent was not valid JSON.";

/** Raw request text -> schema output, or an OpenAI-style invalid_request error. */
export function parseJsonBody<S extends z.ZodType>(
  raw: string,
  schema: S,
): ParseResult<z.output<S>> {
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    return { ok: false, error: errorInfo("invalid_request", MALFORMED_JSON) };
  }
  const r = schema.safeParse(data);
  if (r.success) return { ok: true, value: r.data };
  const first = r.error.issues[0];
  if (!first) return { ok: false, error: errorInfo("invalid_request", "Invalid request body.") };
  return { ok: false, error: issueToError(first as Issue, [], data) };
}

/**
 * The value at `prefix` inside an already-parsed body -> schema output, or an OpenAI-style
 * invalid_request error whose `param` starts with the prefix (e.g. `requests.3.temperature`).
 */
export function parseValueAt<S extends z.ZodType>(
  root: unknown,
  prefix: PathKey[],
  schema: S,
): ParseResult<z.output<S>> {
  const r = schema.safeParse(valueAt(root, prefix));
  if (r.success) return { ok: true, value: r.data };
  const first = r.error.issues[0];
  if (!first) {
    const param = prefix.length > 0 ? prefix.map(String).join(".") : null;
    return { ok: false, error: errorInfo("invalid_request", "Invalid request body.", param) };
  }
  return { ok: false, error: issueToError(first as Issue, prefix, root) };
}

type PathKey = PropertyKey;

/** The fields of zod issues this module reads (a loose view over z.core.$ZodIssue). */
interface Issue {
  code: string;
  path: PathKey[];
  message: string;
  expected?: string;
  origin?: string;
  minimum?: number | bigint;
  maximum?: number | bigint;
  inclusive?: boolean;
  values?: unknown[];
  errors?: Issue[][];
  params?: { code?: string };
}

function valueAt(data: unknown, path: PathKey[]): unknown {
  let v = data;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<PropertyKey, unknown>)[k];
  }
  return v;
}

function describeValue(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "string":
      return "a string";
    case "boolean":
      return "a boolean";
    case "number":
      return Number.isInteger(v) ? "an integer" : "a decimal number";
    case "object":
      return "an object";
    default:
      return typeof v;
  }
}

const EXPECTED: Record<string, string> = {
  string: "a string",
  number: "a number",
  int: "an integer",
  boolean: "a boolean",
  object: "an object",
  array: "an array",
  record: "an object",
};

function quote(v: unknown): string {
  return typeof v === "string" ? `'${v}'` : JSON.stringify(v);
}

function listValues(values: unknown[]): string {
  const q = values.map(quote);
  return q.length <= 1 ? q.join("") : `${q.slice(0, -1).join(", ")}, and ${q[q.length - 1]}`;
}

/**
 * A union that failed in every branch: when exactly one branch matched the value's type (no
 * invalid_type at the union itself), report that branch's first issue; otherwise none.
 */
function innerUnionIssue(issue: Issue): Issue | null {
  const deeper = (issue.errors ?? []).filter(
    (branch) =>
      branch.length > 0 && !branch.some((i) => i.path.length === 0 && i.code === "invalid_type"),
  );
  if (deeper.length !== 1) return null;
  return deeper[0][0] ?? null;
}

function issueToError(issue: Issue, prefix: PathKey[], data: unknown): ErrorInfo {
  const path = [...prefix, ...issue.path];
  if (issue.code === "invalid_union") {
    const inner = innerUnionIssue(issue);
    if (inner) return issueToError(inner, path, data);
  }
  const param = path.length > 0 ? path.map(String).join(".") : null;
  const value = valueAt(data, path);
  const bad = (message: string, code: string | null = null) =>
    errorInfo("invalid_request", message, param, code);

  if (param === null) {
    if (issue.code === "invalid_type") return bad("The request body must be a JSON object.");
    return bad(`Invalid request body: ${issue.message}`, issue.params?.code ?? null);
  }
  if (value === undefined && (issue.code === "invalid_type" || issue.code === "invalid_union")) {
    return bad(`Missing required parameter: '${param}'.`, "missing_required_parameter");
  }
  switch (issue.code) {
    case "custom":
      return bad(issue.message, issue.params?.code ?? null);
    case "invalid_type": {
      const expected = EXPECTED[issue.expected ?? ""] ?? issue.expected ?? "another type";
      return bad(
        `Invalid type for '${param}': expected ${expected}, but got ${describeValue(value)} instead.`,
        "invalid_type",
      );
    }
    case "invalid_union":
      return bad(
        `Invalid type for '${param}': ${issue.message}, but got ${describeValue(value)} instead.`,
        "invalid_type",
      );
    case "invalid_value":
      return bad(
        `Invalid value for '${param}': ${quote(value)}. Supported values are: ${listValues(
          issue.values ?? [],
        )}.`,
        "invalid_value",
      );
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      const bound = small ? issue.minimum : issue.maximum;
      if (issue.origin === "array" && Array.isArray(value)) {
        if (small && value.length === 0) {
          return bad(
            `Invalid '${param}': empty array. Expected an array with at least ${bound} item(s).`,
            "empty_array",
          );
        }
        return bad(
          `Invalid '${param}': array too ${small ? "short" : "long"}. Expected an array with ` +
            `${small ? "at least" : "at most"} ${bound} item(s), but got ${value.length}.`,
          small ? "array_below_min_length" : "array_above_max_length",
        );
      }
      const op = small ? (issue.inclusive ? ">=" : ">") : issue.inclusive ? "<=" : "<";
      return bad(
        `Invalid '${param}': expected a value ${op} ${bound}, but got ${quote(value)} instead.`,
      );
    }
    default:
      return bad(`Invalid '${param}': ${issue.message}.`);
  }
}
