import { describe, expect, it } from "vitest";
import {
  fileFingerprint,
  missingParts,
  pickResumable,
  storedBytes,
  type UploadView,
  usesParts,
} from "../../bin/cli/upload.mjs";

const MIB = 2 ** 20;
const view = (over: Partial<UploadView>): UploadView => ({
  id: "upl_a",
  size: 11 * MIB + 7,
  part_size: 5 * MIB,
  part_count: 3,
  fingerprint: fileFingerprint(11 * MIB + 7, 1700000000123.4),
  parts: [],
  ...over,
});

describe("CLI multipart upload plan", () => {
  it("sends a file in parts only past the part size, or past 64 MiB without one", () => {
    expect(usesParts(64 * MIB, null)).toBe(false);
    expect(usesParts(64 * MIB + 1, null)).toBe(true);
    expect(usesParts(5 * MIB, 5 * MIB)).toBe(false);
    expect(usesParts(5 * MIB + 1, 5 * MIB)).toBe(true);
  });

  it("resumes only the upload of the same file, size and part size, the furthest one", () => {
    const want = {
      size: 11 * MIB + 7,
      fingerprint: fileFingerprint(11 * MIB + 7, 1700000000123.9),
    };
    const other = view({ id: "upl_other", fingerprint: "1:2" });
    const smaller = view({ id: "upl_small", part_size: 6 * MIB, part_count: 2, parts: [1] });
    const a = view({ id: "upl_a", parts: [2] });
    const b = view({ id: "upl_b", parts: [1, 3] });
    expect(pickResumable([other, a, b, smaller], { ...want, partSize: 5 * MIB })?.id).toBe("upl_b");
    expect(pickResumable([other, smaller], { ...want, partSize: null })?.id).toBe("upl_small");
    expect(pickResumable([other, smaller], { ...want, partSize: 5 * MIB })).toBeNull();
    expect(pickResumable([a], { ...want, size: want.size + 1, partSize: null })).toBeNull();
  });

  it("sends the parts not stored, with their byte ranges, and counts the stored bytes", () => {
    const u = view({ parts: [2] });
    expect(missingParts(u)).toEqual([
      { n: 1, start: 0, end: 5 * MIB },
      { n: 3, start: 10 * MIB, end: 11 * MIB + 7 },
    ]);
    expect(storedBytes(u)).toBe(5 * MIB);
    expect(storedBytes(view({ parts: [1, 3] }))).toBe(6 * MIB + 7);
    expect(missingParts(view({ parts: [1, 2, 3] }))).toEqual([]);
  });
});
