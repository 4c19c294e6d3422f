/**
 * Request bodies with a size limit (413 past it), read once as bytes. A middleware that read the
 * body first (idempotency.ts) leaves the bytes here, and the route's readBody gets them.
 */
import { AppError } from "../../shared/errors.ts";

export const MAX_JSON_BODY_BYTES = 4 * 2 ** 20;
/** A batch body may carry many items (POST /api/requests); the largest JSON body we take. */
export const MAX_BATCH_BODY_BYTES = 16 * 2 ** 20;

/** Bodies read already, by request. */
const readAlready = new WeakMap<Request, Uint8Array>();

/** Reads the body once (see readBody) and keeps it for the route's own readBody. */
export async function readBodyOnce(req: Request, maxBytes: number): Promise<Uint8Array> {
  const bytes = await readBody(req, maxBytes);
  readAlready.set(req, bytes);
  return bytes;
}

export async function readBody(req: Request, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? "NaN");
  const tooLarge = () =>
    new AppError(
      "payload_too_large",
      `Request body is larger than the limit of ${maxBytes} bytes.`,
      null,
      "payload_too_large",
    );
  if (Number.isFinite(declared) && declared > maxBytes) throw tooLarge();
  const kept = readAlready.get(req);
  if (kept) {
    if (kept.byteLength > maxBytes) throw tooLarge();
    return kept;
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
