/**
 * Reading a GGUF by byte ranges (shared/gguf/gguf-ranges.ts), as the upload route and the DOs
 * read R2: the header costs a prefix read however large the file, grows its probe for a header
 * larger than it, and a tensor past the object's size is caught from the header alone; a compact
 * image holds exactly the chosen tensors' bytes at relocated offsets.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GgmlType, GgufType, parseGguf, writeGguf } from "../../../shared/gguf/gguf.ts";
import {
  HEADER_PROBE_BYTES,
  readGgufHeader,
  readTensorImage,
} from "../../../shared/gguf/gguf-ranges.ts";
import { isExpertTensor } from "../../../shared/model/expert-shard.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

const MODEL = new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")));

/** Range reads of `bytes` as if it were `size` bytes long (zeros past its end), recorded. */
function reader(bytes: Uint8Array, size = bytes.byteLength) {
  const reads: { offset: number; length: number }[] = [];
  const read = async (offset: number, length: number) => {
    reads.push({ offset, length });
    const out = new Uint8Array(Math.max(0, Math.min(length, size - offset)));
    out.set(bytes.subarray(offset, offset + out.byteLength));
    return out;
  };
  return { read, reads };
}

describe("GGUF range reads", () => {
  it("reads a 1 GiB object's header with one 32 KiB prefix read, before any tensor it skips", async () => {
    const size = 2 ** 30;
    const { read, reads } = reader(MODEL, size);
    const { file, bytesRead } = await readGgufHeader(read, size);
    expect(reads).toEqual([{ offset: 0, length: HEADER_PROBE_BYTES }]);
    expect(bytesRead).toBe(32 * 1024);
    const experts = [...file.tensors.values()].filter((t) => isExpertTensor(t.name));
    expect(Math.min(...experts.map((t) => t.offset))).toBeGreaterThan(bytesRead);
    expect([...file.tensors.keys()]).toEqual([...parseGguf(MODEL).tensors.keys()]);
  });

  it("doubles its probe for a header larger than it", async () => {
    const big = writeGguf(
      [
        { key: "general.architecture", type: GgufType.STRING, value: "llama" },
        { key: "general.note", type: GgufType.STRING, value: "x".repeat(600_000) },
      ],
      [{ name: "w", dims: [4], type: GgmlType.F32, data: new Float32Array(4) }],
    );
    const { read, reads } = reader(big);
    const { file } = await readGgufHeader(read, big.byteLength);
    expect(reads.map((r) => r.length / 1024)).toEqual([32, 64, 128, 256, 512, 1024]);
    expect(file.tensors.get("w")?.offset).toBe(parseGguf(big).tensors.get("w")?.offset);
  });

  it("refuses, from the header, a tensor that runs past the object's size", async () => {
    const size = MODEL.byteLength - 1;
    const { read, reads } = reader(MODEL, size);
    await expect(readGgufHeader(read, size)).rejects.toThrow(/runs past the end of the file/);
    expect(reads).toHaveLength(1); // no further reads to find out
  });

  it("reads just the chosen tensors into a relocated compact image", async () => {
    const whole = parseGguf(MODEL);
    const { read, reads } = reader(MODEL);
    const image = await readTensorImage(whole, read, (n) => !isExpertTensor(n));
    let kept = 0;
    for (const t of whole.tensors.values()) {
      const moved = image.file.tensors.get(t.name);
      if (isExpertTensor(t.name)) {
        expect(moved?.offset).toBe(image.bytes.byteLength); // past the end: reads get nothing
        for (const r of reads) {
          expect(r.offset + r.length <= t.offset || t.offset + t.numBytes <= r.offset).toBe(true);
        }
        continue;
      }
      kept += t.numBytes;
      const at = moved?.offset as number;
      const same = Buffer.from(image.bytes.subarray(at, at + t.numBytes)).equals(
        MODEL.subarray(t.offset, t.offset + t.numBytes),
      );
      expect(same, t.name).toBe(true);
    }
    // only alignment padding between adjacent kept tensors beyond their bytes
    expect(image.bytesRead).toBe(image.bytes.byteLength);
    expect(image.bytesRead).toBeGreaterThanOrEqual(kept);
    expect(image.bytesRead).toBeLessThan(kept + whole.alignment * whole.tensors.size);
  });
});
