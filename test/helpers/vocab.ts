/**
 * Reads llama.cpp's tokenizer test set in ../shared/models/vocab/ (vocab-only GGUFs with their
 * .inp test strings and .out expected ids; the folder's README gives the format).
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { REFERENCE_MODELS_DIR } from "./models.ts";

export const VOCAB_DIR = join(REFERENCE_MODELS_DIR, "vocab");
export const HAVE_VOCABS = existsSync(join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf"));

/** Every vocab GGUF in the folder (file names), sorted. */
export function vocabFiles(): string[] {
  if (!HAVE_VOCABS) return [];
  return readdirSync(VOCAB_DIR)
    .filter((f) => f.endsWith(".gguf"))
    .sort();
}

export interface VocabCase {
  text: string;
  ids: number[];
}

/** The test cases of a vocab file, or null when it has no .inp/.out pair. */
export function vocabCases(file: string): VocabCase[] | null {
  const inp = join(VOCAB_DIR, `${file}.inp`);
  const out = join(VOCAB_DIR, `${file}.out`);
  if (!existsSync(inp) || !existsSync(out)) return null;
  const SEPARATOR = "\n__ggml_vocab_test__\n";
  const texts = readFileSync(inp, "utf8").split(SEPARATOR);
  if (texts.pop() !== "") throw new Error(`${inp}: does not end with the separator`);
  const lines = readFileSync(out, "utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  if (lines.length !== texts.length) {
    throw new Error(`${file}: ${texts.length} test strings but ${lines.length} id lines`);
  }
  return texts.map((text, i) => {
    const line = (lines[i] as string).trim();
    return { text, ids: line === "" ? [] : line.split(" ").map(Number) };
  });
}
