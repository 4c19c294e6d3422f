/** The quantised-weights fixtures (test/fixtures/quant/, scripts/fixtures/llama-cpp-quant.ts). */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildQuantCheckpoint } from "../../scripts/fixtures/make-quant-checkpoint.ts";
import { f32ToF16, GgmlType } from "../../shared/gguf/gguf.ts";
import {
  blockValues,
  q6kLanePosition,
  rowBytes,
  type WeightType,
} from "../../shared/model/quant.ts";
import { gaussian } from "../../shared/random.ts";
import { REPO_ROOT } from "./models.ts";

export const QUANT_FIXTURE_DIR = join(REPO_ROOT, "test/fixtures/quant");

export interface QuantCase {
  prompt: string;
  prompt_ids: number[];
  steps: { id: number; logit: number; second: number; second_logit: number }[];
  first_logits: number[];
}

export interface QuantFixture {
  max_new_tokens: number;
  files: Record<
    string,
    { file: string | null; bytes: number; tensor_types: Record<string, string> }
  >;
  f16_tensor_sha256: Record<string, string>;
  cases: Record<string, QuantCase[]>;
}

/** The quantised weight types of matmulQ, by name (the kernel tests and bench/kernels.ts). */
export const QUANTISED_TYPES = [
  ["F16", GgmlType.F16],
  ["Q8_0", GgmlType.Q8_0],
  ["Q4_0", GgmlType.Q4_0],
  ["Q4_1", GgmlType.Q4_1],
  ["Q4_K", GgmlType.Q4_K],
  ["Q5_K", GgmlType.Q5_K],
  ["Q6_K", GgmlType.Q6_K],
] as const;

export function readQuantFixture(): QuantFixture {
  return JSON.parse(
    readFileSync(join(QUANT_FIXTURE_DIR, "llama-cpp.json"), "utf8"),
  ) as QuantFixture;
}

/** The model file of a fixture type: llama.cpp's file, or for F16 the one our writer makes. */
export function quantModelBytes(type: string): Uint8Array {
  if (type === "F16") return buildQuantCheckpoint(GgmlType.F16);
  return new Uint8Array(readFileSync(join(QUANT_FIXTURE_DIR, `${type}.gguf`)));
}

/** Byte offsets of the f16 scale fields in one block of each type. */
const SCALE_FIELDS: Record<number, number[]> = {
  [GgmlType.Q8_0]: [0],
  [GgmlType.Q4_0]: [0],
  [GgmlType.Q4_1]: [0, 2],
  [GgmlType.Q4_K]: [0, 2],
  [GgmlType.Q5_K]: [0, 2],
  [GgmlType.Q6_K]: [208],
};

/** d rows of n random values of `type`: random quants, finite f16 scales of about `scale`. */
export function randomQuantWeights(
  type: WeightType,
  n: number,
  d: number,
  rng: () => number,
): Uint8Array {
  const bytes = new Uint8Array(d * rowBytes(type, n));
  const normal = gaussian(rng);
  const put16 = (p: number, h: number) => {
    bytes[p] = h & 0xff;
    bytes[p + 1] = h >> 8;
  };
  if (type === GgmlType.F16) {
    for (let i = 0; i < d * n; i++) put16(2 * i, f32ToF16(normal() * 0.1));
    return bytes;
  }
  for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(rng() * 256);
  const blockBytes = rowBytes(type, blockValues(type));
  for (let b = 0; b < bytes.length / blockBytes; b++) {
    for (const f of SCALE_FIELDS[type] as number[]) {
      put16(b * blockBytes + f, f32ToF16((rng() * 2 - 1) * 0.01));
    }
  }
  return bytes;
}

/** LANE_VALUE[L]: the value index at lane position L (q6kLanePosition inverted). */
const LANE_VALUE = new Uint8Array(256);
for (let v = 0; v < 256; v++) LANE_VALUE[q6kLanePosition(v)] = v;

/**
 * Rewrites Q6_K blocks (`data`: a whole number of 210-byte blocks) in place as Q6_K_LANES
 * (shared/model/quant.ts documents the layout): the reference for the wasm build's packing
 * (Kernels.toResident), in plain loops.
 */
export function packQ6kLanes(data: Uint8Array): void {
  if (data.length % 210 !== 0) {
    throw new Error(`Q6_K data of ${data.length} bytes is not a whole number of blocks`);
  }
  const q = new Uint8Array(256);
  for (let p = 0; p < data.length; p += 210) {
    // the block's quants in value order (q6kValue's layout, 128 values a half)
    for (let h = 0; h < 256; h += 128) {
      const ql = p + (h >> 1);
      const qh = p + 128 + (h >> 2);
      for (let l = 0; l < 32; l++) {
        const a = data[ql + l] as number;
        const b = data[ql + 32 + l] as number;
        const c = data[qh + l] as number;
        q[h + l] = (a & 15) | ((c & 3) << 4);
        q[h + 32 + l] = (b & 15) | (((c >> 2) & 3) << 4);
        q[h + 64 + l] = (a >> 4) | (((c >> 4) & 3) << 4);
        q[h + 96 + l] = (b >> 4) | ((c >> 6) << 4);
      }
    }
    for (let pass = 0; pass < 4; pass++) {
      const o = p + 48 * pass;
      const l = 64 * pass;
      for (let i = 0; i < 16; i++) {
        const q3 = q[LANE_VALUE[l + 48 + i] as number] as number;
        data[o + i] = (q[LANE_VALUE[l + i] as number] as number) | ((q3 & 3) << 6);
        data[o + 16 + i] = (q[LANE_VALUE[l + 16 + i] as number] as number) | (((q3 >> 2) & 3) << 6);
        data[o + 32 + i] = (q[LANE_VALUE[l + 32 + i] as number] as number) | ((q3 >> 4) << 6);
      }
    }
  }
}
