/** Locates ../shared/models (the team's reference checkpoints) for the Node test suites. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const REFERENCE_MODELS_DIR = resolve(REPO_ROOT, "../shared/models");
export const HAVE_REFERENCE_MODELS = existsSync(
  join(REFERENCE_MODELS_DIR, "reference/greedy.json"),
);

export function readReferenceModel(file: string): Uint8Array {
  return new Uint8Array(readFileSync(join(REFERENCE_MODELS_DIR, file)));
}

export interface GreedyCase {
  model: string;
  prompt: string;
  prompt_tokens: number[];
  max_new_tokens: number;
  expected_ids: number[];
}

export function readGreedyCases(): GreedyCase[] {
  const raw = readFileSync(join(REFERENCE_MODELS_DIR, "reference/greedy.json"), "utf8");
  return (JSON.parse(raw) as { cases: GreedyCase[] }).cases;
}
