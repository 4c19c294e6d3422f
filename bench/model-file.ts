/**
 * The checkpoint a serving benchmark runs, given as a file: `--model-file PATH` is served as the
 * model id `modelIdOf(PATH)` (its file name without `.gguf`), uploaded with PUT
 * /api/models/<id> (admin) unless the server already serves <id> as its own default model (GET
 * /v1/models/<id> says `owned_by: "system"`: the embedded checkpoint it registers itself). So a
 * run measures the checkpoint it names, whatever the server embeds. Node side.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";

/** The checkpoint bench:serve, sim:validate, profile:path and bench:compare run by default. */
export const DEFAULT_MODEL_FILE = "models/synthetic-moe.gguf";

/** The model id a GGUF file is served as: its file name without `.gguf`. */
export function modelIdOf(path: string): string {
  return basename(path).replace(/\.gguf$/i, "");
}

export interface ServedModel {
  model: string;
  /** False when the server's own default model already is `model`. */
  uploaded: boolean;
  /** From the upload's answer (null when not uploaded). */
  contextLength: number | null;
  vocabSize: number | null;
}

/** `v` when it is a positive integer, else null (fields of a server's JSON answer). */
export function positiveInt(v: unknown): number | null {
  return typeof v === "number" && Number.isInteger(v) && v > 0 ? v : null;
}

/** An error answer's OpenAI-envelope message, or the start of its body. */
export async function errorText(res: Response): Promise<string> {
  const text = await res.text().catch(() => "");
  try {
    const e = (JSON.parse(text) as { error?: { message?: string } }).error;
    if (e?.message) return e.message;
  } catch {
    // not JSON
  }
  return text.slice(0, 200);
}

/**
 * Makes the GGUF at `path` servable on `baseUrl` as `model` (see the module comment).
 * `adminKey` may be null only when nothing needs uploading. @throws Error when the upload is
 * refused or impossible.
 */
export async function serveModelFile(
  baseUrl: string,
  keys: { apiKey: string; adminKey: string | null },
  path: string,
  model = modelIdOf(path),
): Promise<ServedModel> {
  const url = `${baseUrl}/v1/models/${encodeURIComponent(model)}`;
  const got = await fetch(url, { headers: { authorization: `Bearer ${keys.apiKey}` } });
  const known = got.status === 200 ? ((await got.json()) as { owned_by?: unknown }) : null;
  if (got.status !== 200) await got.body?.cancel();
  if (known?.owned_by === "system") {
    return { model, uploaded: false, contextLength: null, vocabSize: null };
  }
  if (!keys.adminKey) throw new Error(`uploading ${path} as ${model} needs an admin key`);
  const res = await fetch(`${baseUrl}/api/models/${encodeURIComponent(model)}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${keys.adminKey}` },
    body: readFileSync(path),
  });
  if (res.status !== 201)
    throw new Error(`uploading ${path}: ${res.status} ${await errorText(res)}`);
  const o = (await res.json()) as Record<string, unknown>;
  return {
    model,
    uploaded: true,
    contextLength: positiveInt(o.contextLength),
    vocabSize: positiveInt(o.vocabSize),
  };
}
