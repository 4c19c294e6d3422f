/** The quantised-weights fixtures (test/fixtures/quant/, scripts/fixtures/llama-cpp-quant.ts). */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildQuantCheckpoint } from "../../scripts/fixtures/make-quant-checkpoint.ts";
import { f32ToF16, GgmlType } from "../../shared/gguf/gguf.ts";
import { blockValues, rowBytes, type WeightType } from "../../shared/model/quant.ts";
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
