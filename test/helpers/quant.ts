/** The quantised-weights fixtures (test/fixtures/quant/, scripts/fixtures/llama-cpp-quant.ts). */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { buildQuantCheckpoint } from "../../scripts/fixtures/make-quant-checkpoint.ts";
import { GgmlType } from "../../shared/model/gguf.ts";
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
