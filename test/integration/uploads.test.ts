/**
 * Multipart model uploads (workers/api/uploads.ts) inside workerd, against Miniflare's R2, which
 * enforces R2's 5 MiB floor for every part but the last. The reference stories260K GGUF is 1.2
 * MB, so the uploaded file is it followed by zero bytes up to 11 MiB + 7 (three parts of 5 MiB,
 * 5 MiB and the rest): the GGUF locates its tensors by offset, so the tail is never read, and the
 * served text is checked against llama.cpp's greedy ids for the unpadded model.
 */
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { parseGguf } from "../../shared/gguf/gguf.ts";
import { Tokenizer } from "../../shared/tokenizer/tokenizer.ts";
import { admin, call, post } from "./worker-client.ts";

const MIB = 2 ** 20;
const PART = 5 * MIB;

function padded(): Uint8Array {
  const model = new Uint8Array(env.REF_STORIES as ArrayBuffer);
  const out = new Uint8Array(11 * MIB + 7);
  out.set(model);
  return out;
}

interface UploadView {
  id: string;
  part_size: number;
  part_count: number;
  parts: number[];
}

const start = async (name: string, body: object) => {
  const res = await post(`/api/models/${name}/uploads`, body, "sk-admin");
  expect(res.status).toBe(201);
  return (await res.json()) as UploadView;
};
const putPart = (name: string, id: string, n: number | string, bytes: Uint8Array) =>
  admin(`/api/models/${name}/uploads/${id}/parts/${n}`, { method: "PUT", body: bytes });
const slice = (file: Uint8Array, n: number) => file.subarray((n - 1) * PART, n * PART);

async function errorOf(res: Response, status: number) {
  expect(res.status).toBe(status);
  return ((await res.json()) as { error: { code: string | null; param: string | null } }).error;
}

describe("multipart model uploads", () => {
  it.skipIf(!env.REF_STORIES)(
    "uploads in parts, resumes from the stored parts, completes and serves llama.cpp's greedy text",
    async () => {
      const file = padded();
      const u = await start("stories-mp", { size: file.byteLength, part_size: PART });
      expect([u.part_size, u.part_count, u.parts]).toEqual([PART, 3, []]);
      expect((await putPart("stories-mp", u.id, 2, slice(file, 2))).status).toBe(200);
      // the client is "lost": a new one asks which parts are stored and sends the rest
      const listed = (await (await admin("/api/models/stories-mp/uploads")).json()) as {
        data: UploadView[];
      };
      expect(listed.data.map((x) => [x.id, x.parts])).toEqual([[u.id, [2]]]);
      const early = await post(`/api/models/stories-mp/uploads/${u.id}/complete`, {}, "sk-admin");
      expect((await errorOf(early, 409)).code).toBe("upload_incomplete");
      for (const n of [1, 3]) {
        expect((await putPart("stories-mp", u.id, n, slice(file, n))).status).toBe(200);
      }
      const view = (await (await admin(`/api/models/stories-mp/uploads/${u.id}`)).json()) as {
        parts: number[];
      };
      expect(view.parts).toEqual([1, 2, 3]);
      const done = await post(`/api/models/stories-mp/uploads/${u.id}/complete`, {}, "sk-admin");
      expect(done.status).toBe(201);
      const model = (await done.json()) as { id: string; size_bytes: number };
      expect([model.id, model.size_bytes]).toEqual(["stories-mp", file.byteLength]);
      // the upload is spent
      expect((await admin(`/api/models/stories-mp/uploads/${u.id}`)).status).toBe(404);
      expect(await env.MODELS.list({ prefix: "uploads/stories-mp/" })).toMatchObject({
        objects: [],
      });
      // the assembled object is the model's, where the multipart upload put it
      const stored = await env.MODELS.list({ prefix: "models/stories-mp/" });
      expect(stored.objects.map((o) => [o.key, o.size])).toEqual([
        [`models/stories-mp/${u.id}.gguf`, file.byteLength],
      ]);

      // a new generation by a single PUT replaces the multipart object, which is deleted
      const again = await admin("/api/models/stories-mp", { method: "PUT", body: file });
      expect(again.status).toBe(201);
      expect(await env.MODELS.list({ prefix: "models/stories-mp/" })).toMatchObject({
        objects: [],
      });
      expect((await env.MODELS.head("models/stories-mp.gguf"))?.size).toBe(file.byteLength);

      const res = await post("/v1/completions", {
        model: "stories-mp",
        prompt: "Once upon a time",
        max_tokens: 12,
        temperature: 0,
      });
      const body = (await res.json()) as { choices: { text: string }[] };
      const ref = (
        JSON.parse(env.REF_GREEDY as string) as {
          cases: { model: string; prompt: string; expected_ids: number[] }[];
        }
      ).cases.find((c) => c.model === "stories260K-f32.gguf" && c.prompt === "Once upon a time");
      const tok = Tokenizer.fromGguf(parseGguf(file).metadata);
      expect(ref).toBeDefined();
      expect(body.choices[0]?.text).toBe(
        tok.decode(ref?.expected_ids.slice(0, 12) ?? [], { stripLeadingSpace: false }),
      );
    },
  );

  it.skipIf(!env.REF_STORIES)(
    "rejects at completion a GGUF whose tensors run past its size, and deletes it",
    async () => {
      const whole = new Uint8Array(env.REF_STORIES as ArrayBuffer);
      const cut = whole.subarray(0, whole.byteLength - 1000); // header intact, last tensor short
      const u = await start("cut-mp", { size: cut.byteLength });
      expect((await putPart("cut-mp", u.id, 1, cut)).status).toBe(200);
      const res = await post(`/api/models/cut-mp/uploads/${u.id}/complete`, {}, "sk-admin");
      const e = (await res.json()) as { error: { code: string; message: string } };
      expect(res.status).toBe(400);
      expect(e.error.code).toBe("invalid_model");
      expect(e.error.message).toMatch(/runs past the end of the file/);
      expect(await env.MODELS.list({ prefix: "models/cut-mp/" })).toMatchObject({ objects: [] });
      expect((await call("/v1/models/cut-mp")).status).toBe(404);
    },
  );

  it("refuses bad part numbers and sizes, aborts, and rejects a non-GGUF at completion", async () => {
    const u = await start("junk-mp", { size: PART + 10, part_size: PART });
    for (const n of [0, 3, "x", "-1", "1.5"]) {
      const e = await errorOf(await putPart("junk-mp", u.id, n, new Uint8Array(10)), 400);
      expect([e.code, e.param]).toEqual(["invalid_part_number", "part_number"]);
    }
    const short = await errorOf(await putPart("junk-mp", u.id, 2, new Uint8Array(9)), 400);
    expect(short.code).toBe("invalid_part_size");
    const long = await putPart("junk-mp", u.id, 2, new Uint8Array(11));
    expect((await errorOf(long, 413)).code).toBe("payload_too_large");

    expect((await putPart("junk-mp", u.id, 1, new Uint8Array(PART).fill(7))).status).toBe(200);
    expect((await putPart("junk-mp", u.id, 2, new Uint8Array(10))).status).toBe(200);
    const bad = await post(`/api/models/junk-mp/uploads/${u.id}/complete`, {}, "sk-admin");
    expect((await errorOf(bad, 400)).code).toBe("invalid_model");
    expect((await admin(`/api/models/junk-mp/uploads/${u.id}`)).status).toBe(404);
    expect((await call("/v1/models/junk-mp")).status).toBe(404);
    expect(await env.MODELS.list({ prefix: "models/junk-mp/" })).toMatchObject({ objects: [] });

    const v = await start("junk-mp", { size: 3 });
    expect(v.part_count).toBe(1);
    expect((await putPart("junk-mp", v.id, 1, new Uint8Array(3))).status).toBe(200);
    const del = await admin(`/api/models/junk-mp/uploads/${v.id}`, { method: "DELETE" });
    expect(await del.json()).toEqual({ id: v.id, object: "model.upload", deleted: true });
    expect(await env.MODELS.list({ prefix: "uploads/junk-mp/" })).toMatchObject({ objects: [] });
    const gone = await putPart("junk-mp", v.id, 1, new Uint8Array(3));
    expect((await errorOf(gone, 404)).code).toBe("upload_not_found");
  });

  it("checks the start body, the part size bounds and the admin key", async () => {
    for (const body of [{}, { size: 0 }, { size: 10, part_size: PART - 1 }, { size: 1.5 }]) {
      const res = await post("/api/models/x-mp/uploads", body, "sk-admin");
      expect((await errorOf(res, 400)).param).toMatch(/^(size|part_size)$/);
    }
    const big = await post(
      "/api/models/x-mp/uploads",
      { size: 10, part_size: 65 * MIB },
      "sk-admin",
    );
    expect((await errorOf(big, 400)).param).toBe("part_size");
    expect((await post("/api/models/x-mp/uploads", { size: 10 })).status).toBe(403);
    expect((await call("/api/models/x-mp/uploads")).status).toBe(403);
    expect((await admin("/api/models/bad name/uploads")).status).toBe(400);
  });
});
