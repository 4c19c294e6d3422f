/**
 * Requests to the worker under test in the workerd suite (tenant "test" by default; "sk-other"
 * is tenant "other", "sk-admin" the admin key), JSON content type, optional extra headers.
 */
import { exports } from "cloudflare:workers";
import SYNTHETIC_MODEL_BYTES from "../../models/synthetic-moe.gguf";

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

/**
 * Uploads the seeded synthetic MoE (models/synthetic-moe.gguf: a 768-token byte-fallback
 * vocabulary for general text, 8 experts, context 2048) as model `synthetic-moe`, for tests
 * that need what the embedded lemma-chain model lacks. Idempotent: a second upload replaces it.
 */
export async function uploadSyntheticModel(): Promise<string> {
  const res = await admin(`/api/models/${SYNTHETIC_MODEL}`, {
    method: "PUT",
    body: SYNTHETIC_MODEL_BYTES,
  });
  if (res.status !== 201 && res.status !== 200) {
    throw new Error(`uploading ${SYNTHETIC_MODEL}: ${res.status} ${await res.text()}`);
  }
  return SYNTHETIC_MODEL;
}
export const SYNTHETIC_MODEL = "synthetic-moe";
