/**
 * Application errors and their OpenAI envelope. One table maps each kind to its HTTP status,
 * `type` and default `code`. Errors cross DO RPC as `ErrorInfo` values (custom properties of
 * thrown errors do not survive RPC). Pure.
 */

export type ErrorKind =
  | "invalid_request"
  | "authentication"
  | "permission"
  | "not_found"
  | "conflict"
  | "payload_too_large"
  | "capacity"
  | "overloaded"
  | "internal";

const TABLE: Record<ErrorKind, { status: number; type: string }> = {
  invalid_request: { status: 400, type: "invalid_request_error" },
  authentication: { status: 401, type: "authentication_error" },
  permission: { status: 403, type: "permission_error" },
  not_found: { status: 404, type: "not_found_error" },
  conflict: { status: 409, type: "invalid_request_error" },
  payload_too_large: { status: 413, type: "invalid_request_error" },
  capacity: { status: 429, type: "rate_limit_error" },
  overloaded: { status: 503, type: "server_error" },
  internal: { status: 500, type: "server_error" },
};

/** An expected failure as plain data (safe to send over RPC and to clients). */
export interface ErrorInfo {
  kind: ErrorKind;
  message: string;
  param: string | null;
  code: string | null;
}

export type Result<T> = { ok: true; value: T } | { ok: false; error: ErrorInfo };

/** An expected failure as a Result. */
export function failure(error: ErrorInfo): { ok: false; error: ErrorInfo } {
  return { ok: false, error };
}

export class AppError extends Error {
  override name = "AppError";
  constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Seconds a client should wait before retrying (the Retry-After header), when known. */
    readonly retryAfterS: number | null = null,
  ) {
    super(message);
  }
  get status(): number {
    return TABLE[this.kind].status;
  }
  toInfo(): ErrorInfo {
    return { kind: this.kind, message: this.message, param: this.param, code: this.code };
  }
  static from(info: ErrorInfo): AppError {
    return new AppError(info.kind, info.message, info.param, info.code);
  }
}

export function errorInfo(
  kind: ErrorKind,
  message: string,
  param: string | null = null,
  code: string | null = null,
): ErrorInfo {
  return { kind, message, param, code };
}

export function statusOf(kind: ErrorKind): number {
  return TABLE[kind].status;
}

export interface ErrorEnvelope {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** OpenAI's error body. */
export function errorEnvelope(e: ErrorInfo): ErrorEnvelope {
  return { error: { message: e.message, type: TABLE[e.kind].type, param: e.param, code: e.code } };
}
