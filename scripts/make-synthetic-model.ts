/**
 * Writes `models/synthetic-moe.gguf`, the seeded synthetic MoE checkpoint that tests and benchmarks
 * use where they need general text, eight experts or a long context (`npm run
 * build:synthetic-model`); its GGUF name is `flowserve-default-moe`. Deterministic: a fixed seed, no I/O except the final write, so two runs
 * give byte-identical files. Importing this module writes nothing; `buildSyntheticModel()` returns
 * the bytes (the unit test regenerates them in memory and compares with the committed file).
 *
 * Architecture: `llama` with experts, laid out exactly like llama.cpp's Mixtral conversion
 * (`blk.N.ffn_gate_inp.weight` [dim, nExp], `ffn_{gate,up}_exps` [dim, ff, nExp],
 * `ffn_down_exps` [ff, dim, nExp], untied `output.weight`):
 *
 *   dim 96, 4 layers, 6 heads of 16, 2 KV heads (GQA 3:1), 8 experts top-2, expert ffn 64,
 *   vocab 768, context 2048, RoPE base 10000 (adjacent pairs), RMSNorm eps 1e-5.
 *
 * Tensors are F16 (`general.file_type` 1), norm vectors F32 as llama.cpp writes them. About 1.7 MB.
 *
 * Vocabulary: our own SentencePiece-style BPE (`tokenizer.ggml.model` "llama"), trained here on a
 * small original English corpus (`CORPUS` and `DIALOGUES` below, written for this file). Layout as
 * in llama's tokenizer: `<unk>` (type 2), `<s>`, `</s>` (type 3), the 256 byte-fallback pieces
 * `<0x00>`..`<0xFF>` (type 6), then the merged pieces in merge order, then the single characters
 * (type 1). Scores: 0 for control and byte pieces, `-rank` for the others, so a piece merged
 * earlier scores higher. The text is prepared for training the way llama.cpp tokenizes it (split
 * at `</s>`, a "▁" prefix on the first fragment and after each special token, spaces as "▁",
 * newlines left to byte fallback), so every piece is reachable by llama.cpp's SPM merging; the
 * build checks that each piece tokenizes to itself.
 *
 * Chat template (`CHAT_TEMPLATE`): Zephyr style plain-text role markers, `<|role|>\n content
 * </s>\n`, ending with `<|assistant|>\n` for a generation prompt. `</s>` is EOS, so a reply ends
 * at EOS. The template renders no BOS: the tokenizer adds exactly one.
 *
 * Weights: the model is untrained, but its greedy output should read as text, so the embedding
 * and the output projection hold an exact word-bigram model of the corpus. The output words are
 * EOS and the 95 (= dim - 1) pieces that most often make a whole word (`outputWords`: "▁the",
 * "▁model", ".", "!", "Hello", ...; not the role markers). For each previous token a, the targets
 * T[a][j] are smoothed log-probabilities of the next output word (the best one forced
 * `TARGET_MARGIN` nats above the rest, the rest floored `TARGET_RANGE` below it, then centred).
 * With a seeded random orthogonal basis q_j (one direction per output word), `token_embd` row a is
 * sum_j T[a][j] q_j scaled to RMS 1 and `output.weight` row j is `LOGIT_SCALE` q_j, so without the
 * layers, logit_j = LOGIT_SCALE T[a][j] / rms(T[a]). All other rows of `output.weight` (`<unk>`,
 * `<s>`, the byte pieces, the text pieces that are not output words) are zero; the best centred
 * target is always well above 0, so greedy decoding never picks them. EOS is an output word: a
 * reply ends at EOS (typically after "."), and after an EOS (an ignore-EOS decode) a new sentence
 * starts.
 * Everything else is seeded Gaussian noise from `mulberry32`: attention and expert weights with
 * std `gain / sqrt(fan_in)` (`GAINS`), router rows with std `1 / sqrt(dim)`, norm weights 1. The
 * gains are small enough that each block moves the residual stream by about 13% of its size: the
 * layers shift every logit (the README prompt's smallest top-1/top-2 margin drops from 4.9 to
 * about 2.2) and the router spreads tokens over all 8 experts, but greedy decoding follows the
 * bigram. Greedy reply to the README prompt "Hello! Who are you?" (chat template applied):
 * "Hello! I am a small language model." then EOS (llama.cpp agrees:
 * test/fixtures/synthetic-moe-llama-cpp.json).
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  GgmlType,
  type GgufMetadataEntry,
  type GgufTensorInput,
  GgufType,
  writeGguf,
} from "../shared/gguf/gguf.ts";
import { gaussian, mulberry32 } from "../shared/random.ts";
import { bool, llamaShapeEntries, str, u32 } from "./gguf-entries.ts";

/** Model shape, with HF config names. */
export const SYNTHETIC_MODEL_DIMS = {
  hiddenSize: 96,
  numHiddenLayers: 4,
  numAttentionHeads: 6,
  numKeyValueHeads: 2,
  headDim: 16,
  numExperts: 8,
  numExpertsPerTok: 2,
  intermediateSize: 64,
  vocabSize: 768,
  maxPositionEmbeddings: 2048,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
} as const;

export const SYNTHETIC_MODEL_NAME = "flowserve-default-moe";
export const SYNTHETIC_MODEL_FILE = "models/synthetic-moe.gguf";
export const SEED = 0x5eed_2026;

/** Zephyr-style template with plain-text role markers; `</s>` (EOS) closes every turn. */
export const CHAT_TEMPLATE =
  "{% for message in messages %}" +
  "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '</s>\\n' }}" +
  "{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

const UNK_ID = 0;
const BOS_ID = 1;
const EOS_ID = 2;
const NUM_BYTE_PIECES = 256;
const FIRST_TEXT_ID = 3 + NUM_BYTE_PIECES;
const SPACE = "\u2581";

/** Token types as llama.cpp numbers them. */
const TokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, BYTE: 6 } as const;

/** Std multipliers (times 1/sqrt(fan_in)) for the random weights. */
const GAINS = { qk: 1.5, v: 1, attnOut: 0.2, ffnIn: 1, ffnDown: 0.3 } as const;
/** Without the layers, logit_j = LOGIT_SCALE * T[a][j] / rms(T[a]). */
const LOGIT_SCALE = 4;
/** Bigram targets (nats): the best next word leads the others by at least TARGET_MARGIN... */
const TARGET_MARGIN = 1;
/** ...and no word is more than TARGET_RANGE below it. */
const TARGET_RANGE = 4;

// ---------------------------------------------------------------------------------------------
// Corpus: original sentences written for this file (no copied text).

const CORPUS: readonly string[] = [
  "The sun is warm today. A small cat sits by the window and looks at the birds in the garden. " +
    "The birds sing, and the cat wants to play with them.",
  "Tom has a red ball. He throws the ball to his friend Anna. She catches it and laughs. They " +
    "play in the park until the sky turns orange.",
  "In the morning we make tea and bread. My mother likes green tea with honey. My father reads " +
    "the news and drinks black coffee.",
  "The river runs past the old mill. In spring the water is cold and fast. Children walk along " +
    "the path and count the boats.",
  "A good helper listens first, then answers with care. When a question is hard, it is fine to " +
    "say that you are not sure.",
  "Numbers are useful. Two and two make four. Ten is more than nine. We can count the apples on " +
    "the table: 1, 2, 3, 4, 5, 6, 7, 8, 9 and 10.",
  "The city is busy at noon. Cars wait at the lights, and people walk to work. A bus stops near " +
    "the market, where farmers sell fruit and fresh vegetables.",
  "At night the stars come out. The moon is bright and round. Everyone goes to bed, and the " +
    "house is quiet.",
  "Lily wanted to bake a cake. She found eggs, milk, flour and sugar in the kitchen. Her brother " +
    "helped her mix everything in a big bowl.",
  "Learning takes time. Read a little every day, ask questions, and write down what you learn. " +
    "Small steps add up.",
  "A computer is a machine that follows simple rules very fast. A program tells it what to do, " +
    "one step at a time.",
  "Rain fell all afternoon. The dog did not want to go outside, so he slept on the rug near the " +
    "fire.",
  "A tree grows from a tiny seed. It needs water, light and good soil. After many years it gives " +
    "shade and fruit to the people who live near it.",
  "The little boat sailed across the lake. The wind was gentle, and the water was blue and " +
    "clear.",
  "Please be kind to others. Say thank you when someone helps you, and help them when they need " +
    "it.",
  "Once upon a time there was a little fox who lived in a green forest. Every morning the fox " +
    "ran to the river to drink and to look for friends.",
  "The fox met a slow turtle. The turtle said that the best way to travel is to enjoy the road. " +
    "The fox thought about it and smiled.",
  "Our school has a big library. Students come here to read books, to write stories and to learn " +
    "about the world.",
  "The weather will be sunny in the morning and cloudy in the evening. Take a warm coat if you " +
    "go out at night.",
  "Sam likes music. He plays the piano after dinner, and his sister sings with him. Their songs " +
    "are happy and short.",
  "The train leaves at 9 and arrives at 12. We will bring water, bread and a good book for the " +
    "long trip.",
  "A language model reads text as small pieces called tokens. It guesses the next token, then " +
    "the next one, and so it writes a whole answer.",
  "This model is a small language model. It is not very smart, but it is fast, and it runs close " +
    "to the people who use it.",
  "When you feel tired, rest for a while. Drink some water, take a walk and look at the sky.",
  "The baker opens the shop early. The smell of warm bread fills the street, and people stop to " +
    "buy a loaf.",
  "Mia found a shiny stone on the beach. She put it in her pocket and took it home to show her " +
    "family.",
  "There are seven days in a week and twelve months in a year. Winter is cold, summer is hot, " +
    "and spring is full of flowers.",
  "The old man fed the ducks by the pond. The ducks were happy and swam around him in a circle.",
  "Jack and Zoe visit the zoo on Sunday. They see a zebra, a lazy lion and six quick monkeys. " +
    "Later they buy a jigsaw puzzle with a fox on the box.",
  "Uncle Victor keeps bees. Quinn, Kate and Ben help him each June. Xavier writes the dates in a " +
    "yellow notebook: May 3, June 14 and July 25.",
  "Good answers are short and clear. If you do not know something, it is better to say so than " +
    "to guess.",
  "Dinner is ready at 7. The soup is hot, the salad is fresh, and there is fruit for everyone.",
];

/** Chat transcripts (role, content), rendered with `CHAT_TEMPLATE` for training. */
const DIALOGUES: readonly (readonly (readonly [string, string])[])[] = [
  [
    ["system", "You are a helpful assistant."],
    ["user", "Hello! Who are you?"],
    ["assistant", "Hello! I am a small language model. I can answer simple questions."],
  ],
  [
    ["user", "Hello!"],
    ["assistant", "Hello! I am a small language model. How can I help you today?"],
  ],
  [
    ["user", "Who are you?"],
    ["assistant", "I am a small language model. I run on the edge, close to you."],
  ],
  [
    ["user", "What is your name?"],
    ["assistant", "My name is FlowServe. I am a tiny model, and I am happy to help."],
  ],
  [
    ["user", "Can you help me?"],
    ["assistant", "Yes, I can help you. Please tell me what you need."],
  ],
  [
    ["user", "What is two and two?"],
    ["assistant", "Two and two make four."],
  ],
  [
    ["user", "Tell me a short story."],
    [
      "assistant",
      "Once upon a time a small cat lived in a quiet house. Every day it sat by the window and " +
        "watched the birds.",
    ],
  ],
  [
    ["system", "You are a friendly helper who gives short answers."],
    ["user", "What color is the sky?"],
    ["assistant", "The sky is blue on a clear day and orange when the sun goes down."],
  ],
  [
    ["user", "How are you today?"],
    ["assistant", "I am well, thank you. How can I help you?"],
  ],
  [
    ["user", "Thank you!"],
    ["assistant", "You are welcome. Have a nice day."],
  ],
  [
    ["user", "Where do fish live?"],
    ["assistant", "Fish live in water: in rivers, in lakes and in the sea."],
  ],
  [
    ["user", "Hello! Are you a person?"],
    ["assistant", "Hello! I am a small language model, not a person."],
  ],
  [
    ["user", "Good morning!"],
    ["assistant", "Good morning! I hope you have a good day."],
  ],
  [
    ["user", "What can you do?"],
    ["assistant", "I can answer questions, tell short stories and help you with simple words."],
  ],
  [
    ["user", "Is it going to rain?"],
    ["assistant", "I am not sure. Look at the sky, and take a coat if the clouds are dark."],
  ],
  [
    ["user", "Hello there."],
    ["assistant", "Hello! I am here to help. What would you like to know?"],
  ],
  [
    ["user", "Do you know a lot?"],
    ["assistant", "I am a small language model, so I know only a little."],
  ],
  [
    ["user", "What day comes after Monday?"],
    ["assistant", "Tuesday comes after Monday."],
  ],
];

/** Renders messages exactly as `CHAT_TEMPLATE` does (checked against @huggingface/jinja). */
export function renderChat(
  messages: readonly (readonly [string, string])[],
  addGenerationPrompt: boolean,
): string {
  let s = "";
  for (const [role, content] of messages) s += `<|${role}|>\n${content}</s>\n`;
  return addGenerationPrompt ? `${s}<|assistant|>\n` : s;
}

/** The training documents: paragraphs, then transcripts (each paragraph ends with EOS). */
function trainingDocuments(): string[] {
  return [...CORPUS.map((p) => `${p}</s>`), ...DIALOGUES.map((d) => renderChat(d, false))];
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: BPE training and llama.cpp's SPM tokenizer

export interface Vocab {
  tokens: string[];
  scores: number[];
  types: number[];
  pieceToId: Map<string, number>;
}

/**
 * Splits a document the way llama.cpp does before SPM: at the special `</s>`, with a space
 * prefix on the first fragment and on each fragment after a special token, spaces escaped as "▁".
 * Returns the escaped fragments interleaved with `null` for each EOS.
 */
function llamaFragments(text: string): (string | null)[] {
  const out: (string | null)[] = [];
  const parts = text.split("</s>");
  parts.forEach((part, i) => {
    if (i > 0) out.push(null);
    // NOTE: llama.cpp makes no fragment for empty text between or after special tokens.
    if (part.length > 0) out.push(` ${part}`.replaceAll(" ", SPACE));
  });
  return out;
}

// Digits stay single characters, as llama's tokenizer splits them.
const PRETOKEN = /▁?(?:<\|[a-z]+\|>|[A-Za-z']+|[^A-Za-z'▁\n])|▁|\n/gu;

/** Training-only word split: pieces never span words, a "▁" sticks to the word after it. */
function pretokenize(fragment: string): string[] {
  const words = fragment.match(PRETOKEN) ?? [];
  if (words.join("") !== fragment) throw new Error(`pretokenizer lost text in ${fragment}`);
  return words.filter((w) => w !== "\n");
}

/** Trains the vocabulary: SentencePiece-style BPE up to `vocabSize` pieces. */
export function trainVocab(vocabSize: number = SYNTHETIC_MODEL_DIMS.vocabSize): Vocab {
  const wordCounts = new Map<string, number>();
  const chars = new Map<string, number>();
  for (const doc of trainingDocuments()) {
    for (const fragment of llamaFragments(doc)) {
      if (fragment === null) continue;
      for (const w of pretokenize(fragment)) {
        wordCounts.set(w, (wordCounts.get(w) ?? 0) + 1);
        for (const c of w) chars.set(c, (chars.get(c) ?? 0) + 1);
      }
    }
  }
  // Sorted, so that the result does not depend on Map insertion order.
  const words = [...wordCounts.keys()].sort().map((w) => ({
    symbols: Array.from(w),
    count: wordCounts.get(w) as number,
  }));
  const charList = [...chars.keys()].sort(
    (a, b) => (chars.get(b) as number) - (chars.get(a) as number) || (a < b ? -1 : 1),
  );
  const numMerges = vocabSize - FIRST_TEXT_ID - charList.length;
  const merged: string[] = [];
  const known = new Set(charList);
  while (merged.length < numMerges) {
    const pairs = new Map<string, { left: string; right: string; count: number }>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.symbols.length; i++) {
        const left = w.symbols[i] as string;
        const right = w.symbols[i + 1] as string;
        const key = `${left}\u0000${right}`;
        const p = pairs.get(key);
        if (p) p.count += w.count;
        else pairs.set(key, { left, right, count: w.count });
      }
    }
    let best: { left: string; right: string; count: number } | undefined;
    for (const p of pairs.values()) {
      if (
        !best ||
        p.count > best.count ||
        (p.count === best.count &&
          (p.left + p.right < best.left + best.right ||
            (p.left + p.right === best.left + best.right && p.left < best.left)))
      ) {
        best = p;
      }
    }
    if (!best) throw new Error(`corpus too small: only ${merged.length} of ${numMerges} merges`);
    const piece = best.left + best.right;
    for (const w of words) {
      const s = w.symbols;
      const next: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === best.left && s[i + 1] === best.right) {
          next.push(piece);
          i++;
        } else {
          next.push(s[i] as string);
        }
      }
      w.symbols = next;
    }
    // A concatenation reached by a second route is already a piece: merge, add nothing.
    if (!known.has(piece)) {
      known.add(piece);
      merged.push(piece);
    }
  }
  const tokens = ["<unk>", "<s>", "</s>"];
  const types: number[] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < NUM_BYTE_PIECES; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
  }
  const scores = tokens.map(() => 0);
  [...merged, ...charList].forEach((piece, rank) => {
    tokens.push(piece);
    types.push(TokenType.NORMAL);
    scores.push(0 - rank);
  });
  const pieceToId = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (types[id] === TokenType.NORMAL) pieceToId.set(t, id);
  });
  const vocab = { tokens, scores, types, pieceToId };
  for (let id = FIRST_TEXT_ID; id < tokens.length; id++) {
    const got = spmTokenize(vocab, tokens[id] as string);
    if (got.length !== 1 || got[0] !== id) {
      throw new Error(`piece ${tokens[id]} (${id}) tokenizes to ${got.join(",")}`);
    }
  }
  return vocab;
}

/**
 * llama.cpp's SPM tokenizer on already-escaped text: start from UTF-8 characters, repeatedly
 * merge the adjacent pair whose concatenation is a piece with the highest score (leftmost on
 * ties), then map characters that are not pieces to byte-fallback tokens.
 */
export function spmTokenize(vocab: Vocab, text: string): number[] {
  const symbols = Array.from(text);
  for (;;) {
    let bestAt = -1;
    let bestScore = Number.NEGATIVE_INFINITY;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const id = vocab.pieceToId.get((symbols[i] as string) + (symbols[i + 1] as string));
      if (id !== undefined && (vocab.scores[id] as number) > bestScore) {
        bestScore = vocab.scores[id] as number;
        bestAt = i;
      }
    }
    if (bestAt < 0) break;
    symbols.splice(bestAt, 2, (symbols[bestAt] as string) + (symbols[bestAt + 1] as string));
  }
  const ids: number[] = [];
  for (const s of symbols) {
    const id = vocab.pieceToId.get(s);
    if (id !== undefined) ids.push(id);
    else for (const b of new TextEncoder().encode(s)) ids.push(3 + b);
  }
  return ids;
}

/**
 * Tokenizes text as llama.cpp does with add_bos and parse_special: BOS, then fragments split at
 * `</s>` (which becomes EOS), each with the space prefix rule of `llamaFragments`.
 */
export function tokenizeLlama(vocab: Vocab, text: string): number[] {
  const ids = [BOS_ID];
  for (const f of llamaFragments(text)) {
    if (f === null) ids.push(EOS_ID);
    else ids.push(...spmTokenize(vocab, f));
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Weights

/** Whether a text piece may be an output word: not a role marker, not a bare "▁". */
function isWordPiece(piece: string): boolean {
  return piece !== SPACE && !piece.includes("<|");
}

/**
 * The output words: EOS and the `numOutputs - 1` text pieces that most often make a whole word of
 * the corpus on their own (role markers and a bare "▁" excluded; ties by id), ascending by id.
 */
export function outputWords(vocab: Vocab, numOutputs: number): number[] {
  const counts = new Map<number, number>();
  for (const doc of trainingDocuments()) {
    for (const fragment of llamaFragments(doc)) {
      if (fragment === null) continue;
      for (const word of pretokenize(fragment)) {
        const id = vocab.pieceToId.get(word);
        if (id !== undefined && isWordPiece(word)) counts.set(id, (counts.get(id) ?? 0) + 1);
      }
    }
  }
  const ranked = [...counts.keys()].sort(
    (x, y) => (counts.get(y) as number) - (counts.get(x) as number) || x - y,
  );
  if (ranked.length < numOutputs - 1) throw new Error("corpus too small for the output words");
  return [EOS_ID, ...ranked.slice(0, numOutputs - 1)].sort((x, y) => x - y);
}

/**
 * Target logits (vocab, outputs), row = previous token: smoothed log-probabilities of the next
 * output word, floored at `TARGET_RANGE` below the best, every other word at least `TARGET_MARGIN`
 * below the best (so that the layers' perturbation rarely flips a choice), then centred.
 */
function bigramTargets(vocab: Vocab, outputs: readonly number[]): Float64Array {
  const v = vocab.tokens.length;
  const k = outputs.length;
  const column = new Map(outputs.map((id, j) => [id, j]));
  const counts = new Float64Array(v * k);
  const unigram = new Float64Array(k).fill(0.5);
  const count = (prev: number, next: number) => {
    const j = column.get(next);
    if (j === undefined) return;
    counts[prev * k + j] += 1;
    unigram[j] += 1;
  };
  for (const doc of trainingDocuments()) {
    const ids = tokenizeLlama(vocab, doc);
    for (let i = 0; i + 1 < ids.length; i++) count(ids[i] as number, ids[i + 1] as number);
    // After an EOS a new text starts, as after BOS (what an ignore-EOS decode sees).
    count(EOS_ID, ids[1] as number);
  }
  let total = 0;
  for (let j = 0; j < k; j++) total += unigram[j] as number;
  const t = new Float64Array(v * k);
  for (let a = 0; a < v; a++) {
    const row = t.subarray(a * k, (a + 1) * k);
    let rowCount = 0;
    for (let j = 0; j < k; j++) rowCount += counts[a * k + j] as number;
    let best = 0;
    for (let j = 0; j < k; j++) {
      // Backoff to the unigram; the unigram also breaks ties between equal counts.
      const p = ((counts[a * k + j] as number) + (unigram[j] as number) / total) / (rowCount + 1);
      row[j] = Math.log(p);
      if ((row[j] as number) > (row[best] as number)) best = j;
    }
    const top = row[best] as number;
    let mean = 0;
    for (let j = 0; j < k; j++) {
      if (j !== best) {
        row[j] = Math.min(Math.max(row[j] as number, top - TARGET_RANGE), top - TARGET_MARGIN);
      }
      mean += (row[j] as number) / k;
    }
    for (let j = 0; j < k; j++) row[j] = (row[j] as number) - mean;
  }
  return t;
}

/** A seeded random orthogonal (n, n) matrix, row-major (Gram-Schmidt on Gaussian rows). */
function randomOrthogonal(normal: () => number, n: number): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < q.length; i++) q[i] = normal();
  for (let i = 0; i < n; i++) {
    const row = q.subarray(i * n, (i + 1) * n);
    for (let j = 0; j < i; j++) {
      const prev = q.subarray(j * n, (j + 1) * n);
      let dot = 0;
      for (let c = 0; c < n; c++) dot += (row[c] as number) * (prev[c] as number);
      for (let c = 0; c < n; c++) row[c] = (row[c] as number) - dot * (prev[c] as number);
    }
    let norm = 0;
    for (let c = 0; c < n; c++) norm += (row[c] as number) ** 2;
    norm = Math.sqrt(norm);
    for (let c = 0; c < n; c++) row[c] = (row[c] as number) / norm;
  }
  return q;
}

/** Seeded Gaussian tensor with std `std`. */
function randomTensor(normal: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = normal() * std;
  return out;
}

/** Builds the checkpoint. Pure and deterministic: same bytes on every call. */
export function buildSyntheticModel(): Uint8Array {
  const d = SYNTHETIC_MODEL_DIMS;
  const dim = d.hiddenSize;
  const kvDim = d.numKeyValueHeads * d.headDim;
  const ff = d.intermediateSize;
  const vocab = trainVocab(d.vocabSize);
  const v = vocab.tokens.length;
  const rng = mulberry32(SEED);
  const normal = gaussian(rng);

  // Output word j reads direction q_j (row j of a random orthogonal matrix); token a embeds as
  // sum_j T[a][j] q_j at RMS 1: after the final RMSNorm, logit_j = LOGIT_SCALE T[a][j] / rms(T[a]).
  const outputs = outputWords(vocab, dim);
  const targets = bigramTargets(vocab, outputs);
  const q = randomOrthogonal(normal, dim);
  const embd = new Float32Array(v * dim);
  for (let a = 0; a < v; a++) {
    const e = new Float64Array(dim);
    for (let j = 0; j < dim; j++) {
      const x = targets[a * dim + j] as number;
      for (let c = 0; c < dim; c++) e[c] = (e[c] as number) + x * (q[j * dim + c] as number);
    }
    let ss = 0;
    for (let c = 0; c < dim; c++) ss += (e[c] as number) ** 2;
    const rms = Math.sqrt(ss / dim);
    for (let c = 0; c < dim; c++) embd[a * dim + c] = (e[c] as number) / rms;
  }
  const output = new Float32Array(v * dim); // rows of non-output tokens stay zero
  outputs.forEach((id, j) => {
    for (let c = 0; c < dim; c++) {
      output[id * dim + c] = (q[j * dim + c] as number) * LOGIT_SCALE;
    }
  });

  const ones = (n: number) => new Float32Array(n).fill(1);
  const F16 = GgmlType.F16;
  const F32 = GgmlType.F32;
  const tensors: GgufTensorInput[] = [
    { name: "token_embd.weight", dims: [dim, v], type: F16, data: embd },
  ];
  const s = (gain: number, fanIn: number) => gain / Math.sqrt(fanIn);
  for (let l = 0; l < d.numHiddenLayers; l++) {
    const p = `blk.${l}`;
    const nExp = d.numExperts;
    tensors.push(
      { name: `${p}.attn_norm.weight`, dims: [dim], type: F32, data: ones(dim) },
      {
        name: `${p}.attn_q.weight`,
        dims: [dim, dim],
        type: F16,
        data: randomTensor(normal, dim * dim, s(GAINS.qk, dim)),
      },
      {
        name: `${p}.attn_k.weight`,
        dims: [dim, kvDim],
        type: F16,
        data: randomTensor(normal, dim * kvDim, s(GAINS.qk, dim)),
      },
      {
        name: `${p}.attn_v.weight`,
        dims: [dim, kvDim],
        type: F16,
        data: randomTensor(normal, dim * kvDim, s(GAINS.v, dim)),
      },
      {
        name: `${p}.attn_output.weight`,
        dims: [dim, dim],
        type: F16,
        data: randomTensor(normal, dim * dim, s(GAINS.attnOut, dim)),
      },
      { name: `${p}.ffn_norm.weight`, dims: [dim], type: F32, data: ones(dim) },
      {
        name: `${p}.ffn_gate_inp.weight`,
        dims: [dim, nExp],
        type: F16,
        data: randomTensor(normal, dim * nExp, s(1, dim)),
      },
      {
        name: `${p}.ffn_gate_exps.weight`,
        dims: [dim, ff, nExp],
        type: F16,
        data: randomTensor(normal, dim * ff * nExp, s(GAINS.ffnIn, dim)),
      },
      {
        name: `${p}.ffn_up_exps.weight`,
        dims: [dim, ff, nExp],
        type: F16,
        data: randomTensor(normal, dim * ff * nExp, s(GAINS.ffnIn, dim)),
      },
      {
        name: `${p}.ffn_down_exps.weight`,
        dims: [ff, dim, nExp],
        type: F16,
        data: randomTensor(normal, ff * dim * nExp, s(GAINS.ffnDown, ff)),
      },
    );
  }
  tensors.push(
    { name: "output_norm.weight", dims: [dim], type: F32, data: ones(dim) },
    { name: "output.weight", dims: [dim, v], type: F16, data: output },
  );

  const metadata: GgufMetadataEntry[] = [
    str("general.architecture", "llama"),
    str("general.name", SYNTHETIC_MODEL_NAME),
    ...llamaShapeEntries({
      contextLength: d.maxPositionEmbeddings,
      dim,
      layers: d.numHiddenLayers,
      ff,
      heads: d.numAttentionHeads,
      kvHeads: d.numKeyValueHeads,
      headDim: d.headDim,
      ropeTheta: d.ropeTheta,
      rmsNormEps: d.rmsNormEps,
    }),
    u32("llama.expert_count", d.numExperts),
    u32("llama.expert_used_count", d.numExpertsPerTok),
    u32("llama.vocab_size", v),
    u32("general.file_type", 1),
    str("tokenizer.ggml.model", "llama"),
    {
      key: "tokenizer.ggml.tokens",
      type: GgufType.ARRAY,
      itemType: GgufType.STRING,
      value: vocab.tokens,
    },
    {
      key: "tokenizer.ggml.scores",
      type: GgufType.ARRAY,
      itemType: GgufType.FLOAT32,
      value: vocab.scores,
    },
    {
      key: "tokenizer.ggml.token_type",
      type: GgufType.ARRAY,
      itemType: GgufType.INT32,
      value: vocab.types,
    },
    u32("tokenizer.ggml.bos_token_id", BOS_ID),
    u32("tokenizer.ggml.eos_token_id", EOS_ID),
    u32("tokenizer.ggml.unknown_token_id", UNK_ID),
    bool("tokenizer.ggml.add_bos_token", true),
    bool("tokenizer.ggml.add_eos_token", false),
    str("tokenizer.chat_template", CHAT_TEMPLATE),
  ];
  return writeGguf(metadata, tensors);
}

// ---------------------------------------------------------------------------------------------
// CLI: writes the file only when run directly.

function main(): void {
  const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
  const path = resolve(root, SYNTHETIC_MODEL_FILE);
  const bytes = buildSyntheticModel();
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, bytes);
  const d = SYNTHETIC_MODEL_DIMS;
  console.log(
    `wrote ${SYNTHETIC_MODEL_FILE}: ${bytes.byteLength} bytes; llama + MoE, dim ${d.hiddenSize}, ` +
      `${d.numHiddenLayers} layers, ${d.numAttentionHeads} heads / ${d.numKeyValueHeads} KV ` +
      `(head_dim ${d.headDim}), ${d.numExperts} experts top-${d.numExpertsPerTok}, expert ffn ` +
      `${d.intermediateSize}, vocab ${d.vocabSize}, context ${d.maxPositionEmbeddings}`,
  );
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main();
}
