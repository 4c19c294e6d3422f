/**
 * Multipart model uploads (admin), for GGUFs larger than one request body: start an upload, PUT
 * its parts (each at most MAX_BODY_MB), list the stored parts to resume, complete or abort. The
 * parts go to an R2 multipart upload at the key the model will have; completing assembles it
 * (R2 checks each part's etag), checks R2's size against the announced one and validates the
 * GGUF from its header alone (range reads; tensor bounds against the size: validateStoredGguf),
 * so the model is never read into worker memory, then registers it as a single PUT would (the
 * replaced generation's object is deleted) and deletes the upload's state. A file that fails is
 * deleted. R2 cannot list an upload's parts, so each stored part leaves a small marker object
 * holding its etag; the upload's own record is a JSON object beside them:
 *   uploads/NAME/ID.json         the upload (size, part size, R2 upload id, owner, fingerprint)
 *   uploads/NAME/ID/part-N       a marker per stored part, its body the part's R2 etag
 *   models/NAME/ID.gguf          the multipart object: the model's r2Key once registered
 */
import { Hono } from "hono";
import { AppError } from "../../shared/errors.ts";
import type { AppEnv } from "../app-env.ts";
import type { Env } from "../env.ts";
import { getConfig } from "../env.ts";
import { MAX_JSON_BODY_BYTES, readBody } from "../middleware/body.ts";
import { checkModelName, modelObject, registerStored, validateStoredGguf } from "../models.ts";
import { requireAdmin } from "./admin.ts";

/** R2's floor for every part but the last (Miniflare enforces it too). */
export const MIN_PART_BYTES = 5 * 2 ** 20;
/** R2's most parts in one upload. */
const MAX_PARTS = 10_000;
const UPLOAD_ID_RE = /^upl_[0-9a-f]{32}$/;

interface Upload {
  id: string;
  model: string;
  size: number;
  partSize: number;
  partCount: number;
  /** The client's label for its file (the CLI: size and mtime), to find an upload to resume. */
  fingerprint: string | null;
  ownedBy: string;
  r2UploadId: string;
  createdAt: number;
}

const recordKey = (name: string, id: string) => `uploads/${name}/${id}.json`;
const partPrefix = (name: string, id: string) => `uploads/${name}/${id}/part-`;
const objectKey = (name: string, id: string) => `models/${name}/${id}.gguf`;

/** The byte length part n must have: the part size, the remainder for the last. */
function partLength(u: Upload, n: number): number {
  return n < u.partCount ? u.partSize : u.size - (u.partCount - 1) * u.partSize;
}

/** The numbers of the stored parts, ascending. */
async function storedParts(env: Env, u: Upload): Promise<number[]> {
  const prefix = partPrefix(u.model, u.id);
  const parts: number[] = [];
  let cursor: string | undefined;
  do {
    const page = await env.MODELS.list({ prefix, cursor });
    for (const o of page.objects) parts.push(Number(o.key.slice(prefix.length)));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return parts.sort((a, b) => a - b);
}

/** A stored part's R2 etag, kept as its marker's body. */
async function partEtag(env: Env, u: Upload, n: number): Promise<string> {
  const marker = await env.MODELS.get(`${partPrefix(u.model, u.id)}${n}`);
  if (!marker) throw new AppError("internal", `the marker of part ${n} of ${u.id} is gone`);
  return marker.text();
}

async function uploadView(env: Env, u: Upload) {
  const parts = await storedParts(env, u);
  return {
    id: u.id,
    object: "model.upload",
    model: u.model,
    size: u.size,
    part_size: u.partSize,
    part_count: u.partCount,
    fingerprint: u.fingerprint,
    created: Math.floor(u.createdAt / 1000),
    parts,
  };
}

/** @throws AppError 404 for an unknown (or finished) upload id. */
async function loadUpload(env: Env, name: string, id: string): Promise<Upload> {
  const obj = UPLOAD_ID_RE.test(id) ? await env.MODELS.get(recordKey(name, id)) : null;
  if (!obj) {
    throw new AppError(
      "not_found",
      `No upload ${id} in progress for model ${name}.`,
      "upload_id",
      "upload_not_found",
    );
  }
  return (await obj.json()) as Upload;
}

/** Deletes the upload's record and part markers. */
async function forget(env: Env, u: Upload): Promise<void> {
  const parts = await storedParts(env, u);
  const keys = [recordKey(u.model, u.id), ...parts.map((n) => `${partPrefix(u.model, u.id)}${n}`)];
  for (let i = 0; i < keys.length; i += 1000) await env.MODELS.delete(keys.slice(i, i + 1000));
}

function wholeNumber(v: unknown, param: string, min: number, max: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new AppError(
      "invalid_request",
      `${param} must be a whole number from ${min} to ${max}`,
      param,
    );
  }
  return v;
}

export const uploads = new Hono<AppEnv>();

uploads.use("/:name/uploads/*", async (c, next) => {
  requireAdmin(c.var.principal.isAdmin);
  checkModelName(c.req.param("name") ?? "");
  await next();
});
uploads.use("/:name/uploads", async (c, next) => {
  requireAdmin(c.var.principal.isAdmin);
  checkModelName(c.req.param("name") ?? "");
  await next();
});

/** Starts an upload: body {size, part_size?, fingerprint?}; part_size defaults to the body limit. */
uploads.post("/:name/uploads", async (c) => {
  const name = c.req.param("name");
  const maxPart = getConfig(c.env).maxUploadBytes;
  if (maxPart < MIN_PART_BYTES) {
    throw new AppError(
      "invalid_request",
      `multipart uploads need MAX_BODY_MB of at least 5 (R2's smallest part); it is ${maxPart / 2 ** 20}`,
      null,
      "multipart_unavailable",
    );
  }
  let body: Record<string, unknown>;
  try {
    body = JSON.parse(new TextDecoder().decode(await readBody(c.req.raw, MAX_JSON_BODY_BYTES)));
  } catch {
    throw new AppError("invalid_request", "the body must be a JSON object", "body");
  }
  if (typeof body !== "object" || body === null)
    throw new AppError("invalid_request", "the body must be a JSON object", "body");
  const partSize = wholeNumber(body.part_size ?? maxPart, "part_size", MIN_PART_BYTES, maxPart);
  const size = wholeNumber(body.size, "size", 1, partSize * MAX_PARTS);
  const fingerprint = body.fingerprint ?? null;
  if (fingerprint !== null && (typeof fingerprint !== "string" || fingerprint.length > 256))
    throw new AppError(
      "invalid_request",
      "fingerprint is a string of at most 256 characters",
      "fingerprint",
    );
  const id = `upl_${crypto.randomUUID().replaceAll("-", "")}`;
  const r2 = await c.env.MODELS.createMultipartUpload(objectKey(name, id));
  const u: Upload = {
    id,
    model: name,
    size,
    partSize,
    partCount: Math.ceil(size / partSize),
    fingerprint,
    ownedBy: c.var.principal.tenant,
    r2UploadId: r2.uploadId,
    createdAt: Date.now(),
  };
  await c.env.MODELS.put(recordKey(name, id), JSON.stringify(u));
  return c.json(await uploadView(c.env, u), 201);
});

/** The model's uploads in progress, to find one to resume. */
uploads.get("/:name/uploads", async (c) => {
  const name = c.req.param("name");
  const page = await c.env.MODELS.list({ prefix: `uploads/${name}/`, delimiter: "/" });
  const found = await Promise.all(
    page.objects
      .filter((o) => o.key.endsWith(".json"))
      .map((o) => loadUpload(c.env, name, o.key.slice(`uploads/${name}/`.length, -5))),
  );
  const data = await Promise.all(found.map((u) => uploadView(c.env, u)));
  return c.json({ object: "list", data });
});

uploads.get("/:name/uploads/:id", async (c) => {
  const u = await loadUpload(c.env, c.req.param("name"), c.req.param("id"));
  return c.json(await uploadView(c.env, u));
});

/** Stores part N (1-based); a part sent again replaces the stored one. */
uploads.put("/:name/uploads/:id/parts/:n", async (c) => {
  const u = await loadUpload(c.env, c.req.param("name"), c.req.param("id"));
  const raw = c.req.param("n");
  const n = /^[1-9][0-9]{0,4}$/.test(raw) ? Number(raw) : 0;
  if (n < 1 || n > u.partCount) {
    throw new AppError(
      "invalid_request",
      `part numbers of this upload run from 1 to ${u.partCount}, not ${JSON.stringify(raw)}`,
      "part_number",
      "invalid_part_number",
    );
  }
  const want = partLength(u, n);
  const bytes = await readBody(c.req.raw, want);
  if (bytes.byteLength !== want) {
    throw new AppError(
      "invalid_request",
      `part ${n} must be ${want} bytes, not ${bytes.byteLength}`,
      "body",
      "invalid_part_size",
    );
  }
  const part = await c.env.MODELS.resumeMultipartUpload(
    objectKey(u.model, u.id),
    u.r2UploadId,
  ).uploadPart(n, bytes);
  await c.env.MODELS.put(`${partPrefix(u.model, u.id)}${n}`, part.etag);
  return c.json({ part_number: n, size: want });
});

/** Assembles the parts, validates the model from its header and registers it. */
uploads.post("/:name/uploads/:id/complete", async (c) => {
  const u = await loadUpload(c.env, c.req.param("name"), c.req.param("id"));
  const stored = new Set(await storedParts(c.env, u));
  const missing: number[] = [];
  for (let n = 1; n <= u.partCount; n++) if (!stored.has(n)) missing.push(n);
  if (missing.length > 0) {
    throw new AppError(
      "conflict",
      `upload ${u.id} is missing parts ${missing.slice(0, 20).join(", ")}${missing.length > 20 ? ", ..." : ""}`,
      "upload_id",
      "upload_incomplete",
    );
  }
  const key = objectKey(u.model, u.id);
  const parts = await Promise.all(
    [...stored].map(async (partNumber) => ({
      partNumber,
      etag: await partEtag(c.env, u, partNumber),
    })),
  );
  try {
    const obj = await c.env.MODELS.resumeMultipartUpload(key, u.r2UploadId).complete(parts);
    if (obj.size !== u.size) {
      throw new AppError(
        "invalid_request",
        `the assembled upload has ${obj.size} bytes, not the ${u.size} announced`,
        "upload_id",
        "invalid_part_size",
      );
    }
    const summary = await validateStoredGguf(c.env, key, obj.size);
    const record = await registerStored(c.env, {
      name: u.model,
      r2Key: key,
      sizeBytes: obj.size,
      ownedBy: u.ownedBy,
      summary,
    });
    c.var.log.info("model.uploaded", { model: u.model, sizeBytes: obj.size, etag: obj.etag });
    return c.json(modelObject(record), 201);
  } catch (e) {
    await c.env.MODELS.delete(key); // a file that fails validation starts over
    throw e;
  } finally {
    // the multipart upload is spent either way
    await forget(c.env, u);
  }
});

uploads.delete("/:name/uploads/:id", async (c) => {
  const u = await loadUpload(c.env, c.req.param("name"), c.req.param("id"));
  await c.env.MODELS.resumeMultipartUpload(objectKey(u.model, u.id), u.r2UploadId).abort();
  await forget(c.env, u);
  return c.json({ id: u.id, object: "model.upload", deleted: true });
});
