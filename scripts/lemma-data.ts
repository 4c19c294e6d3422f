/**
 * Writes lemma-chain problems as JSON lines of token ids, for the training script
 * (scripts/train/train_lemma.py): `{"ids": [...], "num_prompt": N}` per line, the vocabulary
 * first as `{"vocab": [...], "bos": 1, "eos": 2, "chat_template": "..."}`. The one generator is
 * shared/eval/lemma-chain.ts; this only serialises it.
 *
 *   npx tsx scripts/lemma-data.ts --seed 1 --count 20000 > /tmp/lemma-train.jsonl
 */
import {
  LEMMA_BOS,
  LEMMA_CHAT_TEMPLATE,
  LEMMA_EOS,
  LEMMA_VOCAB,
  lemmaProblem,
  trainingIds,
} from "../shared/eval/lemma-chain.ts";

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}

const seed = arg("seed", 1);
const count = arg("count", 1000);
const lines = [
  JSON.stringify({
    vocab: LEMMA_VOCAB,
    bos: LEMMA_BOS,
    eos: LEMMA_EOS,
    chat_template: LEMMA_CHAT_TEMPLATE,
  }),
];
for (let i = 0; i < count; i++) {
  const t = trainingIds(lemmaProblem(seed, i));
  lines.push(JSON.stringify({ ids: t.ids, num_prompt: t.numPrompt }));
}
process.stdout.write(`${lines.join("\n")}\n`);
