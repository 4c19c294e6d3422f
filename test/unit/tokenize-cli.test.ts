/**
 * `npm run -s tokenize` (scripts/tokenize.ts) as a child process on vocab-only GGUFs: stdin in,
 * `{"ids": [...]}` on the last line, compared with llama.cpp's ids from the vocab fixture.
 */
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO_ROOT } from "../helpers/models.ts";
import { HAVE_VOCABS, VOCAB_DIR } from "../helpers/vocab.ts";

const FIXTURE = JSON.parse(
  readFileSync(join(REPO_ROOT, "test/fixtures/llama-cpp-vocab-tokenize.json"), "utf8"),
) as { texts: string[]; ids: Record<string, number[][]> };

function tokenize(args: string[], input: string): { status: number | null; lines: string[] } {
  const res = spawnSync(
    join(REPO_ROOT, "node_modules/.bin/tsx"),
    ["scripts/tokenize.ts", ...args],
    {
      cwd: REPO_ROOT,
      input,
      encoding: "utf8",
    },
  );
  return { status: res.status, lines: `${res.stdout}${res.stderr}`.trim().split("\n") };
}

function lastIds(lines: string[]): number[] {
  return (JSON.parse(lines.at(-1) as string) as { ids: number[] }).ids;
}

describe("npm run tokenize", () => {
  it.skipIf(!HAVE_VOCABS)("prints llama.cpp's ids, with BOS only where the vocab asks", () => {
    const i = FIXTURE.texts.findIndex((t) => t.includes("日本語"));
    const text = FIXTURE.texts[i] as string;
    const gpt2 = join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf");
    const coder = join(VOCAB_DIR, "ggml-vocab-deepseek-coder.gguf");
    const expectedGpt2 = FIXTURE.ids["ggml-vocab-gpt-2.gguf"]?.[i];
    const expectedCoder = FIXTURE.ids["ggml-vocab-deepseek-coder.gguf"]?.[i] as number[];

    const plain = tokenize(["--model", gpt2, "--json"], text);
    expect(plain.status).toBe(0);
    expect(lastIds(plain.lines)).toEqual(expectedGpt2); // GPT-2 adds no BOS
    expect(lastIds(tokenize(["--model", coder, "--json"], text).lines)).toEqual([
      32013,
      ...expectedCoder,
    ]);
    expect(lastIds(tokenize(["--model", coder, "--no-bos", "--json"], text).lines)).toEqual(
      expectedCoder,
    );
  });

  it.skipIf(!HAVE_VOCABS)("tokenizes special-token text as plain text", () => {
    const gpt2 = join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf");
    const ids = lastIds(tokenize(["--model", gpt2, "--json"], "<|endoftext|>").lines);
    expect(ids.length).toBeGreaterThan(1);
    expect(ids).not.toContain(50256);
  });

  it("fails with a message when the model cannot be read", () => {
    const res = tokenize(["--model", join(REPO_ROOT, "no-such-model.gguf"), "--json"], "x");
    expect(res.status).toBe(1);
    expect(res.lines.join("\n")).toMatch(/cannot read the tokenizer of .*no-such-model\.gguf/);
  });
});
