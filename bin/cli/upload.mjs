// The plan of a multipart model upload (workers/api/uploads.ts), as pure functions: which
// upload to resume, which parts are still to send and where each lies in the file. The I/O is in
// bin/flowserve.mjs; test/unit/cli-upload.test.ts checks these.

const MIB = 2 ** 20;
/** Above this (the server's default MAX_BODY_MB) a file goes up in parts unless --part-size says. */
export const SINGLE_PUT_MAX_BYTES = 64 * MIB;

/** The label the server keeps for a file, to find its upload again: size and modification time. */
export function fileFingerprint(size, mtimeMs) {
  return `${size}:${Math.floor(mtimeMs)}`;
}

/** Whether a file of `size` bytes goes up in parts (`partSize` from --part-size, else null). */
export function usesParts(size, partSize) {
  return size > (partSize ?? SINGLE_PUT_MAX_BYTES);
}

/**
 * The upload in progress for this file, if any: same fingerprint and size, and the part size
 * asked for (when one was), the most parts stored first. `uploads` is GET .../uploads's data.
 */
export function pickResumable(uploads, { size, fingerprint, partSize }) {
  const fits = uploads.filter(
    (u) =>
      u.fingerprint === fingerprint &&
      u.size === size &&
      (partSize === null || u.part_size === partSize),
  );
  return fits.sort((a, b) => b.parts.length - a.parts.length)[0] ?? null;
}

/** The parts of an upload still to send, ascending, each with its byte range in the file. */
export function missingParts(upload) {
  const stored = new Set(upload.parts);
  const out = [];
  for (let n = 1; n <= upload.part_count; n++) {
    if (stored.has(n)) continue;
    const start = (n - 1) * upload.part_size;
    out.push({ n, start, end: Math.min(upload.size, start + upload.part_size) });
  }
  return out;
}

/** The bytes of the stored parts of an upload (where a resumed upload's progress starts). */
export function storedBytes(upload) {
  const last = upload.size - (upload.part_count - 1) * upload.part_size;
  return upload.parts.reduce((s, n) => s + (n === upload.part_count ? last : upload.part_size), 0);
}
