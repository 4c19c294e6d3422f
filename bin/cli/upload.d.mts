/** Types for upload.mjs. */
export interface UploadView {
  id: string;
  size: number;
  part_size: number;
  part_count: number;
  fingerprint: string | null;
  parts: number[];
}
export const SINGLE_PUT_MAX_BYTES: number;
export function fileFingerprint(size: number, mtimeMs: number): string;
export function usesParts(size: number, partSize: number | null): boolean;
export function pickResumable(
  uploads: UploadView[],
  want: { size: number; fingerprint: string; partSize: number | null },
): UploadView | null;
export function missingParts(upload: UploadView): { n: number; start: number; end: number }[];
export function storedBytes(upload: UploadView): number;
