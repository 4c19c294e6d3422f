/**
 * Streamed text never splits a character: byte-level BPE and SPM byte tokens can end inside a
 * UTF-8 sequence, and the stop-string hold-back cuts UTF-16 text; every chunk the engine emits
 * must still be whole characters, and the chunks must concatenate to the decoded text.
 */
import { describe, expect, it } from "vitest";
import { Engine, type SeqOutput } from "../../../shared/engine/engine.ts";
import type { Executor, StepPlan, StepResult } from "../../../shared/engine/executor.ts";
import { KvBlockManager } from "../../../shared/engine/kv-block-manager.ts";
import { Scheduler } from "../../../shared/engine/scheduler.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { Tokenizer, TokenType } from "../../../shared/tokenizer/tokenizer.ts";

/** GPT-2's bytes_to_unicode, written out from its definition (printable Latin-1 is itself). */
function gpt2ByteChars(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
  let extra = 0;
  return Array.from({ length: 256 }, (_, b) => String.fromCharCode(keep(b) ? b : 256 + extra++));
}

/** A byte-level BPE vocab of the 256 byte tokens only: every UTF-8 byte is its own token. */
function byteLevelTokenizer(): Tokenizer {
  return new Tokenizer({ model: "gpt2", tokens: [...gpt2ByteChars(), "<|end|>"], merges: [] });
}

/** An SPM vocab with byte-fallback tokens only (ids 3..258 are <0x00>..<0xFF>). */
function spmByteTokenizer(): Tokenizer {
  const hex = (b: number) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`;
  const tokens = ["<unk>", "<s>", "</s>", ...Array.from({ length: 256 }, (_, b) => hex(b))];
  const tokenTypes = tokens.map((_, i) => (i === 0 ? 2 : i < 3 ? 3 : TokenType.BYTE));
  return new Tokenizer({ tokens, tokenTypes });
}

/** Emits `script[k]` as the k-th sampled token of every sequence. */
class ScriptedExecutor implements Executor {
  constructor(private readonly script: number[]) {}
  async execute(plan: StepPlan): Promise<StepResult> {
    return {
      sampled: plan.seqs.map((s) =>
        s.sample
          ? {
              tokenId: this.script[s.startPos + s.tokenIds.length - 2] ?? 0,
              logprob: 0,
              topLogprobs: [],
            }
          : null,
      ),
    };
  }
}

async function streamedChunks(tok: Tokenizer, ids: number[], stop: string[]): Promise<string[]> {
  return (await streamedOutputs(tok, ids, stop)).map((o) => o.text);
}

async function streamedOutputs(tok: Tokenizer, ids: number[], stop: string[]) {
  const scheduler = new Scheduler(
    { maxNumSeqs: 1, maxNumBatchedTokens: 64, maxModelLen: 256, eosIds: [] },
    new KvBlockManager(64, 4),
  );
  const engine = new Engine(scheduler, new ScriptedExecutor(ids), tok);
  engine.add("a", [0, 0], { ...GREEDY, maxTokens: ids.length, stop });
  const outputs: SeqOutput[] = [];
  while (engine.hasWork()) outputs.push(...(await engine.step()).outputs);
  return outputs;
}

const TEXT = "Hi 😀, 日本語 and é… 👩‍👩‍👧!";
/** Whole characters only: no lone surrogate, no U+FFFD from a split UTF-8 sequence. */
const WELL_FORMED = /^(?:[^\ud800-\udfff\ufffd]|[\ud800-\udbff][\udc00-\udfff])*$/;

const UTF8 = new TextEncoder().encode(TEXT);

describe("streamed text keeps characters whole", () => {
  const cases = [
    // the byte-level BPE encoder itself splits the text into one token per byte
    ["byte-level BPE", byteLevelTokenizer(), (tok: Tokenizer) => tok.encode(TEXT)],
    ["SPM byte tokens", spmByteTokenizer(), () => Array.from(UTF8, (b) => 3 + b)],
  ] as const;
  for (const [name, tok, idsOf] of cases) {
    it(`${name}: one token per UTF-8 byte`, async () => {
      const ids = idsOf(tok);
      expect(ids.length).toBe(UTF8.length);
      // stops of length 1, 2 and 4 hold back 0, 1 and 3 UTF-16 units: odd counts would cut
      // the emoji's surrogate pairs if the engine released text by units, not whole tokens
      for (const stop of [[], ["#"], ["##"], ["####"]]) {
        const chunks = await streamedChunks(tok, ids, stop);
        expect(chunks.join(""), JSON.stringify(stop)).toBe(TEXT);
        for (const c of chunks) expect(c, JSON.stringify({ stop, c })).toMatch(WELL_FORMED);
        expect(chunks.filter((c) => c === "").length).toBeGreaterThan(0); // bytes were held back
      }
    });
  }
});

describe("released text is exactly the text of the released tokens", () => {
  // what request migration relies on: a continuation that starts after the released tokens
  // regenerates whatever was held back (a split character, a tail that could start a stop)
  const tok = byteLevelTokenizer();
  const ids = tok.encode(TEXT);
  for (const stop of [[], ["#"], ["é…"], ["and é"], ["and x"], ["👩‍👩‍👧!"]]) {
    it(`stop ${JSON.stringify(stop)}`, async () => {
      const outputs = await streamedOutputs(tok, ids, stop);
      const released: number[] = [];
      let text = "";
      for (const o of outputs) {
        released.push(...o.tokenIds);
        text += o.text;
        if (o.finished) break;
        expect(tok.decode(released), JSON.stringify({ stop, text })).toBe(text);
        // the rest comes from the tokens after the released ones, decoded afresh
        expect(released).toEqual(ids.slice(0, released.length));
      }
      const cut = stop[0] ? TEXT.indexOf(stop[0]) : -1;
      expect(text).toBe(cut >= 0 ? TEXT.slice(0, cut) : TEXT);
      // a stop string's tail was held back: some outputs released nothing
      if (stop.length > 0 && stop[0] !== "#") {
        expect(outputs.some((o) => !o.finished && o.tokenIds.length === 0)).toBe(true);
      }
    });
  }
});
