/**
 * The trained lemma-chain model (models/lemma-moe.gguf, scripts/train/train_lemma.py): the
 * engine's logits equal PyTorch's (the fixture the training script's export writes), on both
 * kernel backends; greedy decoding solves held-out problems (checked by the task's own checker);
 * and rendering a problem through the model's chat template and encoding it gives exactly the
 * ids the model was trained on. Skipped while the model is not committed (the
 * recipe is; see README "KV-cache policies").
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { describe, expect, it } from "vitest";
import { runToCompletion } from "../../hosts/node-engine.ts";
import { GREEDY } from "../../shared/engine/sequence.ts";
import { checkLemma, lemmaProblem, trainingIds } from "../../shared/eval/lemma-chain.ts";
import { instanceFor, KERNEL_KINDS } from "../helpers/engine.ts";
import { REPO_ROOT } from "../helpers/models.ts";

const MODEL = join(REPO_ROOT, "models/lemma-moe.gguf");
const FIXTURE = join(REPO_ROOT, "test/fixtures/lemma-moe-logits.json");

describe.skipIf(!existsSync(MODEL))("lemma-chain model", () => {
  const bytes = () => new Uint8Array(readFileSync(MODEL));

  it.each(KERNEL_KINDS)("gives PyTorch's logits (%s kernels)", async (kind) => {
    const { inst } = await instanceFor(bytes(), kind, { maxModelLen: 512 });
    const fx = JSON.parse(readFileSync(FIXTURE, "utf8")) as {
      cases: { ids: number[]; rows: number[]; logits: number[][] }[];
    };
    const t = inst.transformer;
    const V = t.config.vocabSize;
    for (const c of fx.cases) {
      const table = Array.from({ length: 32 }, (_, i) => i);
      const rows = c.rows;
      const out = t.forward({
        numTokens: c.ids.length,
        tokenIds: c.ids,
        positions: c.ids.map((_, i) => i),
        seqIndex: c.ids.map(() => 0),
        blockTables: [table],
        logitRows: rows,
      });
      rows.forEach((_, i) => {
        for (let v = 0; v < V; v++) {
          expect(Math.abs((out[i * V + v] as number) - (c.logits[i]?.[v] as number))).toBeLessThan(
            1e-3,
          );
        }
      });
    }
  });

  it("solves held-out problems by greedy decoding (dense KV cache)", async () => {
    const { inst } = await instanceFor(bytes(), "wasm", { maxModelLen: 512 });
    let exact = 0;
    const n = 20;
    for (let i = 0; i < n; i++) {
      const p = lemmaProblem(3, i);
      const t = trainingIds(p);
      const out = await runToCompletion(inst.engine, t.ids.slice(0, t.numPrompt), {
        ...GREEDY,
        maxTokens: 256,
      });
      if (checkLemma(p, out.text).exact) exact++;
    }
    expect(exact / n).toBeGreaterThanOrEqual(0.9);
  });

  it("encodes a chat-rendered problem to exactly the training ids", async () => {
    const { inst } = await instanceFor(bytes(), "js", { maxModelLen: 512 });
    const template = inst.file.metadata.get("tokenizer.chat_template") as string;
    for (let i = 0; i < 20; i++) {
      const p = lemmaProblem(3, i);
      const text = new Template(template).render({
        messages: [{ role: "user", content: p.prompt }],
        add_generation_prompt: true,
      });
      const t = trainingIds(p);
      expect(inst.tokenizer.encode(text, { parseSpecial: true })).toEqual(
        t.ids.slice(0, t.numPrompt),
      );
    }
  });
});
