/**
 * The llama (SPM) tokenizer against llama.cpp: greedy.json prompts, the node-llama-cpp fixture
 * (test/fixtures/llama-cpp-tokenize.json, made by scripts/fixtures/llama-cpp-tokenize.mjs), and
 * synthetic vocabularies for merge order, fallbacks, special tokens and streaming.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type GgufValue, parseGguf } from "../../shared/gguf/gguf.ts";
import { mulberry32 } from "../../shared/random.ts";
import { Tokenizer, type TokenizerVocab, TokenType } from "../../shared/tokenizer/tokenizer.ts";
import {
  HAVE_REFERENCE_MODELS,
  REPO_ROOT,
  readGreedyCases,
  readReferenceModel,
} from "../helpers/models.ts";

interface FixtureCase {
  text: string;
  special: boolean;
  ids: number[];
  detokenized: string;
}
interface FixtureDetokenize {
  ids: number[];
  special: boolean;
  text: string;
}
interface Fixture {
  provenance: string;
  model: string;
  cases: FixtureCase[];
  detokenize: FixtureDetokenize[];
}

const FIXTURE = JSON.parse(
  readFileSync(join(REPO_ROOT, "test/fixtures/llama-cpp-tokenize.json"), "utf8"),
) as Fixture;

const tokenizers = new Map<string, Tokenizer>();
function referenceTokenizer(file: string): Tokenizer {
  let tok = tokenizers.get(file);
  if (!tok) {
    tok = Tokenizer.fromGguf(parseGguf(readReferenceModel(file)).metadata);
    tokenizers.set(file, tok);
  }
  return tok;
}

const BYTE_TOKENS = Array.from(
  { length: 256 },
  (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
);

/** <unk> <s> </s>, 256 byte tokens, then `extra` (text, score, type) entries. */
function synthetic(
  extra: [string, number, number?][],
  opts: Partial<TokenizerVocab> & { noBytes?: boolean } = {},
): Tokenizer {
  const tokens = ["<unk>", "<s>", "</s>", ...(opts.noBytes ? [] : BYTE_TOKENS)];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let i = 3; i < tokens.length; i++) types.push(TokenType.BYTE);
  const scores = tokens.map(() => 0);
  for (const [text, score, type] of extra) {
    tokens.push(text);
    scores.push(score);
    types.push(type ?? TokenType.NORMAL);
  }
  return new Tokenizer({ tokens, scores, tokenTypes: types, ...opts });
}

function pieces(tok: Tokenizer, ids: number[]): string[] {
  return ids.map((id) => tok.tokenPiece(id));
}

function stream(tok: Tokenizer, ids: number[], opts = {}): string[] {
  const dec = tok.createStreamDecoder(opts);
  const parts = ids.map((id) => dec.push(id));
  parts.push(dec.flush());
  return parts;
}

describe("Tokenizer.fromGguf", () => {
  const base = (): Map<string, GgufValue> =>
    new Map<string, GgufValue>([
      ["tokenizer.ggml.model", "llama"],
      ["tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "▁", "a", "▁a"]],
      ["tokenizer.ggml.scores", [0, 0, 0, -1, -2, -3]],
      ["tokenizer.ggml.token_type", [2, 3, 3, 1, 1, 1]],
    ]);

  it("reads the llama defaults and ignores out-of-range special ids", () => {
    const meta = base();
    meta.set("tokenizer.ggml.padding_token_id", 4294967295);
    meta.set("tokenizer.ggml.eos_token_id", 4294967295);
    const tok = Tokenizer.fromGguf(meta);
    expect([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId]).toEqual([6, 1, 2, 0]);
    expect([tok.addBos, tok.addEos, tok.addSpacePrefix]).toEqual([true, false, true]);
    expect(tok.encode("a a")).toEqual([1, 5, 5]);
  });

  it("honours add_bos_token, add_eos_token and add_space_prefix", () => {
    const meta = base();
    meta.set("tokenizer.ggml.add_bos_token", false);
    meta.set("tokenizer.ggml.add_eos_token", true);
    meta.set("tokenizer.ggml.add_space_prefix", false);
    meta.set("tokenizer.ggml.bos_token_id", 2n);
    const tok = Tokenizer.fromGguf(meta);
    expect([tok.addBos, tok.addEos, tok.addSpacePrefix, tok.bosId]).toEqual([
      false,
      true,
      false,
      2,
    ]);
    expect(tok.encode("a a")).toEqual([4, 5, 2]);
    expect(tok.encode("a a", { addBos: true, addEos: false })).toEqual([2, 4, 5]);
    // No space prefix: no leading space to strip either.
    expect(tok.decode([5, 4])).toBe(" aa");
  });

  it("rejects other tokenizer models with a clear error", () => {
    const meta = base();
    meta.set("tokenizer.ggml.model", "bert");
    expect(() => Tokenizer.fromGguf(meta)).toThrow(/unsupported tokenizer model "bert"/);
    meta.set("tokenizer.ggml.model", "gpt2");
    expect(() => Tokenizer.fromGguf(meta)).toThrow(/needs tokenizer.ggml.merges/);
    meta.delete("tokenizer.ggml.model");
    expect(() => Tokenizer.fromGguf(meta)).toThrow(/no tokenizer.ggml.model/);
  });
});

describe("SPM encode", () => {
  it("merges the highest-scoring pair first, ties to the leftmost", () => {
    const tie = synthetic([
      ["▁", -10],
      ["a", -10],
      ["b", -10],
      ["ab", -1],
      ["ba", -1],
    ]);
    expect(pieces(tie, tie.encode("aba", { addBos: false }))).toEqual(["▁", "ab", "a"]);
    const right = synthetic([
      ["▁", -10],
      ["a", -10],
      ["b", -10],
      ["ab", -2],
      ["ba", -1],
    ]);
    expect(pieces(right, right.encode("aba", { addBos: false }))).toEqual(["▁", "a", "ba"]);
  });

  it("only merges through vocab tokens (no multi-step jumps)", () => {
    // "abc" exists but neither "ab" nor "bc": it can never form.
    const tok = synthetic([
      ["a", -1],
      ["b", -1],
      ["c", -1],
      ["abc", 10],
      ["▁a", -5],
    ]);
    expect(pieces(tok, tok.encode("abc", { addBos: false }))).toEqual(["▁a", "b", "c"]);
  });

  it("falls back to byte tokens, then single-char tokens, then UNK", () => {
    const tok = synthetic([["▁", -1]]);
    const ids = tok.encode("é", { addBos: false });
    expect(pieces(tok, ids)).toEqual(["▁", "<0xC3>", "<0xA9>"]);
    const noBytes = synthetic(
      [
        ["▁", -1],
        ["x", -1],
      ],
      { noBytes: true },
    );
    expect(noBytes.encode("xé", { addBos: false })).toEqual([3, 4, 0, 0]);
  });

  it("encodes lone surrogates as U+FFFD (what UTF-8 encoding gives llama.cpp)", () => {
    const tok = synthetic([["▁", -1]]);
    expect(tok.encode("\ud800", { addBos: false })).toEqual(
      tok.encode("\ufffd", { addBos: false }),
    );
  });

  it("handles empty text, BOS and EOS", () => {
    const tok = synthetic([["▁", -1]]);
    expect(tok.encode("")).toEqual([1]);
    expect(tok.encode("", { addBos: false })).toEqual([]);
    expect(tok.encode("", { addEos: true })).toEqual([1, 2]);
  });

  it("parses control tokens only with parseSpecial, user-defined tokens always", () => {
    const tok = synthetic([
      ["<|im_start|>", 0, TokenType.CONTROL],
      ["<|im_end|>", 0, TokenType.USER_DEFINED], // forced to control: an EOG text
      ["<tool>", 0, TokenType.USER_DEFINED],
      ["▁", -1],
      ["h", -1],
      ["i", -1],
      ["▁hi", 0],
      ["hi", -0.5],
    ]);
    const start = tok.tokenId("<|im_start|>") as number;
    const end = tok.tokenId("<|im_end|>") as number;
    const tool = tok.tokenId("<tool>") as number;
    const hi = tok.tokenId("hi") as number;
    const spaceHi = tok.tokenId("▁hi") as number;
    expect(tok.isControl(end)).toBe(true);
    expect(tok.isEog(end)).toBe(true);
    expect(tok.isEog(2)).toBe(true);
    expect(tok.isEog(start)).toBe(false);
    // Every text fragment at the start or after a special token gets the space prefix.
    expect(tok.encode("<|im_start|>hi<|im_end|>", { addBos: false, parseSpecial: true })).toEqual([
      start,
      spaceHi,
      end,
    ]);
    expect(tok.encode("hi<tool>hi", { addBos: false })).toEqual([spaceHi, tool, spaceHi]);
    expect(tok.encode("<s>hi</s>", { parseSpecial: true })).toEqual([1, 1, spaceHi, 2]);
    // Unparsed, "<s>" is plain text (bytes here).
    const plain = tok.encode("<s>", { addBos: false });
    expect(pieces(tok, plain)).toEqual(["▁", "<0x3C>", "<0x73>", "<0x3E>"]);
    expect(tok.decode([start, hi, end])).toBe("hi");
    expect(tok.decode([start, hi, end, tool], { special: true })).toBe(
      "<|im_start|>hi<|im_end|><tool>",
    );
  });

  it("matches the longest special token first", () => {
    const tok = synthetic([
      ["<a>", 0, TokenType.CONTROL],
      ["<a><b>", 0, TokenType.CONTROL],
      ["▁", -1],
    ]);
    const ab = tok.tokenId("<a><b>") as number;
    const a = tok.tokenId("<a>") as number;
    expect(tok.encode("<a><b><a>", { addBos: false, parseSpecial: true })).toEqual([ab, a]);
  });
});

describe("decode and StreamDecoder", () => {
  const tok = synthetic([
    ["▁", -1],
    ["▁Once", -2],
    ["é", -3],
    ["<pad>", 0, TokenType.UNUSED],
  ]);
  const once = tok.tokenId("▁Once") as number;
  const space = tok.tokenId("▁") as number;
  const e = tok.tokenId("é") as number;
  const b = (byte: number): number => 3 + byte;

  it("strips one leading space from the first token only", () => {
    expect(tok.decode([once, once])).toBe("Once Once");
    expect(tok.decode([1, once])).toBe(" Once");
    expect(tok.decode([space, space, once])).toBe("  Once");
    expect(tok.decode([once], { stripLeadingSpace: false })).toBe(" Once");
    expect(tok.decode([tok.tokenId("<pad>") as number])).toBe("");
  });

  it("renders bytes raw and invalid UTF-8 as U+FFFD", () => {
    expect(tok.decode([b(0xe2), b(0x98), b(0x95)])).toBe("☕");
    expect(tok.decode([b(0xe2), b(0x98), once])).toBe("\ufffd Once");
    expect(tok.decode([b(0xc3), e, b(0xa9)])).toBe("\ufffdé\ufffd");
  });

  it("exposes piece, bytes and text helpers for logprobs", () => {
    expect(tok.tokenPiece(once)).toBe("▁Once");
    expect(tok.tokenBytes(once)).toEqual([0x20, 0x4f, 0x6e, 0x63, 0x65]);
    expect(tok.tokenText(once)).toBe(" Once");
    expect(tok.tokenBytes(b(0xe2))).toEqual([0xe2]);
    expect(tok.tokenText(b(0xe2))).toBe("byte: \\xe2");
    expect(tok.tokenText(b(0x41))).toBe("A");
    expect(tok.tokenByte(b(0xe2))).toBe(0xe2);
    expect(tok.tokenByte(once)).toBeNull();
    expect(tok.tokenBytes(1)).toEqual([0x3c, 0x73, 0x3e]);
    expect(tok.tokenType(1)).toBe(TokenType.CONTROL);
    expect(tok.isControl(1)).toBe(true);
    expect(tok.isControl(once)).toBe(false);
    expect(() => tok.tokenPiece(tok.vocabSize)).toThrow(RangeError);
  });

  it("holds back partial characters across pushes", () => {
    expect(stream(tok, [once, b(0xe2), b(0x98), b(0x95), once])).toEqual([
      "Once",
      "",
      "",
      "☕",
      " Once",
      "",
    ]);
    expect(stream(tok, [once, b(0xf0), b(0x9f)])).toEqual(["Once", "", "", "\ufffd"]);
  });

  it("concatenates to decode(ids) on random id sequences", () => {
    const rng = mulberry32(20240611);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)] as T;
    const chars = ["a", "é", "☕", "😀", "中"].map((c) => Array.from(new TextEncoder().encode(c)));
    for (let trial = 0; trial < 500; trial++) {
      const ids: number[] = [];
      const n = Math.floor(rng() * 12);
      for (let i = 0; i < n; i++) {
        const r = rng();
        if (r < 0.4)
          ids.push(...pick(chars).map(b)); // whole character as byte tokens
        else if (r < 0.6)
          ids.push(b(Math.floor(rng() * 256))); // any byte, often invalid
        else if (r < 0.7)
          ids.push(Math.floor(rng() * 3)); // unk / bos / eos
        else ids.push(pick([space, once, e, tok.vocabSize - 1]));
      }
      for (const opts of [{}, { special: true }, { stripLeadingSpace: false }]) {
        expect(stream(tok, ids, opts).join("")).toBe(tok.decode(ids, opts));
      }
    }
  });
});

describe("against llama.cpp (reference models)", () => {
  it.skipIf(!HAVE_REFERENCE_MODELS)("reproduces the greedy.json prompt tokens", () => {
    const cases = readGreedyCases();
    expect(new Set(cases.map((c) => c.model)).size).toBe(3);
    for (const c of cases) {
      const tok = referenceTokenizer(c.model);
      expect(tok.encode(c.prompt), `${c.model} ${c.prompt}`).toEqual(c.prompt_tokens);
      expect(tok.decode(c.prompt_tokens.slice(1))).toBe(c.prompt);
    }
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    `matches every tokenize() case in the node-llama-cpp fixture (${FIXTURE.cases.length})`,
    () => {
      expect(FIXTURE.provenance).toMatch(/node-llama-cpp 3\.22\.1 tokenize\(\)/);
      const tok = referenceTokenizer(FIXTURE.model);
      for (const c of FIXTURE.cases) {
        const label = `${JSON.stringify(c.text)} special=${c.special}`;
        expect(tok.encode(c.text, { addBos: false, parseSpecial: c.special }), label).toEqual(
          c.ids,
        );
        expect(tok.decode(c.ids), label).toBe(c.detokenized);
        expect(stream(tok, c.ids).join(""), label).toBe(c.detokenized);
        if (!c.special && !c.text.includes("▁")) expect(tok.decode(c.ids), label).toBe(c.text);
      }
    },
  );

  it.skipIf(!HAVE_REFERENCE_MODELS)(
    `matches every detokenize() case in the fixture (${FIXTURE.detokenize.length})`,
    () => {
      const tok = referenceTokenizer(FIXTURE.model);
      for (const c of FIXTURE.detokenize) {
        const label = JSON.stringify(c.ids);
        expect(tok.decode(c.ids, { special: c.special }), label).toBe(c.text);
        expect(stream(tok, c.ids, { special: c.special }).join(""), label).toBe(c.text);
      }
    },
  );

  it.skipIf(!HAVE_REFERENCE_MODELS)("reads token types and special ids", () => {
    const tok = referenceTokenizer("stories260K-f32.gguf");
    expect([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId, tok.addBos]).toEqual([
      512,
      1,
      2,
      0,
      true,
    ]);
    expect([0, 1, 2, 3, 258, 259].map((id) => tok.tokenType(id))).toEqual([2, 3, 3, 6, 6, 1]);
    expect(tok.tokenPiece(13)).toBe("<0x0A>");
    expect(tok.tokenBytes(13)).toEqual([10]);
    expect(tok.tokenText(378)).toBe(" time");
  });

  it.skipIf(!HAVE_REFERENCE_MODELS)("streams random reference ids like decode()", () => {
    const tok = referenceTokenizer("stories260K-f32.gguf");
    const rng = mulberry32(7);
    for (let trial = 0; trial < 300; trial++) {
      const ids = Array.from({ length: Math.floor(rng() * 20) }, () =>
        rng() < 0.5 ? Math.floor(rng() * 259) : Math.floor(rng() * tok.vocabSize),
      );
      expect(stream(tok, ids).join("")).toBe(tok.decode(ids));
    }
  });

  // speed is measured by `npm run bench:tokenizer`, not asserted here
  it.skipIf(!HAVE_REFERENCE_MODELS)("round-trips a 2,000-character prompt", () => {
    const tok = referenceTokenizer("stories260K-f32.gguf");
    const paragraph = FIXTURE.cases.reduce((a, c) => (c.text.length > a.length ? c.text : a), "");
    const prompt = `${paragraph} `.repeat(Math.ceil(2000 / paragraph.length)).slice(0, 2000);
    expect(tok.decode(tok.encode(prompt, { addBos: false }))).toBe(prompt);
  });
});
