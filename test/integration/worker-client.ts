/**
 * Requests to the worker under test in the workerd suite (tenant "test" by default; "sk-other"
 * is tenant "other", "sk-admin" the admin key), JSON content type, optional extra headers.
 */
import { exports } from "cloudflare:workers";

export const call = (
  path: string,
  init: RequestInit = {},
  key = "sk-test",
  extra: HeadersInit = {},
) =>
  exports.default.fetch(
    new Request(`http://localhost${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        ...(extra as Record<string, string>),
      },
    }),
  );

export const post = (path: string, body: object, key?: string, extra?: HeadersInit) =>
  call(path, { method: "POST", body: JSON.stringify(body) }, key, extra);

export const admin = (path: string, init: RequestInit = {}) => call(path, init, "sk-admin");

/** POST /api/deployments with the admin key. */
export const postDeployment = (body: object) => post("/api/deployments", body, "sk-admin");
