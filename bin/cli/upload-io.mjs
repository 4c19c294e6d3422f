// `flowserve models upload`'s I/O: one streamed PUT for a small file, else the multipart routes
// (workers/api/uploads.ts) with the plan from upload.mjs, resuming the file's upload in progress.
import { createReadStream, statSync } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { errorMessage, progressBar } from "./format.mjs";
import { CliError, call, callJson, err, out, parseJson } from "./http.mjs";
import { fileFingerprint, missingParts, pickResumable, storedBytes, usesParts } from "./upload.mjs";

/** Progress on stderr: redrawn in place on a terminal, one line at the end otherwise. */
function progress(label, total) {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  return {
    update(done) {
      const now = Date.now();
      if (tty && (now - last > 100 || done === total)) {
        last = now;
        process.stderr.write(`\r${progressBar(label, done, total)}`);
      }
    },
    end(done) {
      process.stderr.write(`${tty ? "\r" : ""}${progressBar(label, done, total)}\n`);
    },
  };
}

/** The file as a streamed body that counts the bytes fetch pulls from it. */
function countingStream(path, onBytes) {
  const file = createReadStream(path, { highWaterMark: 256 * 1024 });
  const it = file[Symbol.asyncIterator]();
  let sent = 0;
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await it.next();
      if (done) return controller.close();
      sent += value.byteLength;
      onBytes(sent);
      controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    },
    cancel() {
      file.destroy();
    },
  });
}

/** Statuses that say "send a Content-Length body, not a streamed one". */
const NO_STREAM_STATUSES = [411, 501, 505];

/** The file as a model: one PUT when small, else in parts (resuming an upload in progress). */
export async function upload(cmd) {
  let stat;
  try {
    stat = statSync(cmd.path);
  } catch (e) {
    throw new CliError(`cannot read ${cmd.path}: ${e.code ?? e.message}`);
  }
  const m = usesParts(stat.size, cmd.partSize)
    ? await uploadInParts(cmd, stat.size, stat.mtimeMs)
    : await uploadWhole(cmd, stat.size);
  if (cmd.json) return out(JSON.stringify(m, null, 2));
  out(
    `uploaded ${m.id}: ${m.architecture ?? "?"}, ${m.size_bytes} bytes, context ${m.contextLength}`,
  );
}

/**
 * The multipart upload: the server's upload in progress for this file (same fingerprint, size
 * and part size) or a new one; then the parts it lacks, one PUT each, then complete. Progress:
 * the bar redrawn on a terminal, one line per part otherwise.
 */
async function uploadInParts(cmd, total, mtimeMs) {
  const base = `/api/models/${encodeURIComponent(cmd.name)}/uploads`;
  const fingerprint = fileFingerprint(total, mtimeMs);
  const pending = await callJson(cmd, "GET", base);
  let u = pickResumable(pending.data, { size: total, fingerprint, partSize: cmd.partSize });
  if (u) {
    err(`resuming upload ${u.id}: ${u.parts.length} of ${u.part_count} parts stored`);
  } else {
    const body = { size: total, fingerprint };
    if (cmd.partSize !== null) body.part_size = cmd.partSize;
    u = await callJson(cmd, "POST", base, body);
  }
  const tty = process.stderr.isTTY === true;
  let done = storedBytes(u);
  const file = await open(cmd.path, "r");
  try {
    for (const p of missingParts(u)) {
      const bytes = new Uint8Array(p.end - p.start);
      const { bytesRead } = await file.read(bytes, 0, bytes.byteLength, p.start);
      if (bytesRead !== bytes.byteLength) throw new CliError(`${cmd.path} changed while uploading`);
      await call(cmd, "PUT", `${base}/${u.id}/parts/${p.n}`, {
        body: bytes,
        headers: { "content-type": "application/octet-stream" },
      });
      done += bytes.byteLength;
      const line = progressBar(`uploading ${cmd.name} part ${p.n}/${u.part_count}`, done, total);
      process.stderr.write(tty ? `\r${line}` : `${line}\n`);
    }
  } finally {
    await file.close();
  }
  if (tty) process.stderr.write("\n");
  return callJson(cmd, "POST", `${base}/${u.id}/complete`, {});
}

/** One streamed PUT with a progress bar (a Content-Length body where streaming is refused). */
async function uploadWhole(cmd, total) {
  const url = `${cmd.url}/api/models/${encodeURIComponent(cmd.name)}`;
  const headers = {
    authorization: `Bearer ${cmd.key}`,
    "content-type": "application/octet-stream",
  };
  const bar = progress(`uploading ${cmd.name}`, total);
  let sent = 0;
  let res = null;
  try {
    const body = countingStream(cmd.path, (n) => {
      sent = n;
      bar.update(n);
    });
    res = await fetch(url, { method: "PUT", headers, body, duplex: "half" });
  } catch (e) {
    // fetch refused the streamed body before sending it: fall back below; else a lost connection
    if (sent > 0) throw new CliError(`upload to ${cmd.url} failed: ${e?.cause?.message ?? e}`);
  }
  if (res === null || NO_STREAM_STATUSES.includes(res.status)) {
    // send the file read into memory, with the progress of reading it
    await res?.body?.cancel();
    const reading = progress(`reading ${cmd.name}`, total);
    const bytes = await readFile(cmd.path);
    reading.end(bytes.byteLength);
    try {
      res = await fetch(url, { method: "PUT", headers, body: bytes });
    } catch (e) {
      throw new CliError(`cannot reach ${cmd.url}: ${e?.cause?.message ?? e?.message ?? e}`);
    }
    sent = bytes.byteLength;
  }
  bar.end(sent);
  const text = await res.text();
  if (!res.ok) throw new CliError(errorMessage(res.status, text));
  return parseJson(text);
}
