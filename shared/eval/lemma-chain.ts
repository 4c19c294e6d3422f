/**
 * The "lemma chain" task (RaaS digest section 8.1): a seeded generator of problems whose chain of
 * thought has milestone tokens (a lemma's value, read by the next line and again w lines later,
 * then never) and a phoenix token (a fact from the prompt read only by the final answer), with an
 * exact-match checker. Character-level: every character is one token of the model's own
 * vocabulary (`LEMMA_VOCAB`). Pure.
 *
 * Prompt (the user message): 16 facts and the query, e.g.
 *   a=7;b=2;c=9;...;p=4;Q08W3F4G9
 * K = 8 stages, lifetime w = 3, and the values of two of the facts: F's digit is value(f) of the
 * final fact f (here k = 4), G's is value(g) of the seed fact g (here c = 9). The query carries
 * the values rather than the names (a look-up by name, two steps of associative recall, did not
 * train on a CPU budget; README "KV-cache policies"), so the 16 facts are the prompt's filler
 * and distractors. The generation prompt is ">".
 * Answer: line 0 is "00:v+0=v;" with v = L(0) = G's digit, read from the prompt; stage
 * j = 1..K is one line "jj:a+b=c;" with a = L(j-1), b = L(max(0, j-w)), c = (a + b) mod 10 =
 * L(j); then "A" L(K) "*" v_f "=" (L(K) * v_f) mod 10 "." and end of sequence, v_f being F's
 * digit in the prompt (the phoenix: read only by the final line).
 */
import { mulberry32 } from "../random.ts";

export const FACT_NAMES = "abcdefghijklmnop";
/** The characters of the task, in token order after `<unk>`, `<s>`, `</s>`. */
export const LEMMA_CHARS = `0123456789${FACT_NAMES}=;+*:QWFG>A.`;
export const LEMMA_VOCAB = ["<unk>", "<s>", "</s>", ...LEMMA_CHARS.split("")];
export const LEMMA_BOS = 1;
export const LEMMA_EOS = 2;
/** The chat template of the lemma model: the user messages' text, then ">" to answer. */
export const LEMMA_CHAT_TEMPLATE =
  "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}" +
  "{% if add_generation_prompt %}>{% endif %}";

export interface LemmaProblem {
  facts: number[];
  stages: number;
  lifetime: number;
  finalFact: number;
  seedFact: number;
  /** The user message. */
  prompt: string;
  /** The expected answer text (without the end of sequence). */
  answer: string;
  /** L(1..K). */
  lemmas: number[];
  final: number;
}

export interface LemmaOptions {
  minStages: number;
  maxStages: number;
  lifetimes: readonly number[];
}

/**
 * The options the lemma model was trained and is evaluated on: 4 to 10 stages keeps every
 * problem's prompt plus reasoning (about 110 to 185 tokens) longer than the small cache budgets
 * (64 to 128 tokens) while the chain of about 3K critical tokens stays short enough for greedy
 * decoding to get every one right (README "KV-cache policies").
 */
export const TRAIN_OPTIONS: LemmaOptions = { minStages: 4, maxStages: 10, lifetimes: [1, 2, 3, 4] };

const two = (n: number) => String(n).padStart(2, "0");

/** Problem number `index` of the stream `seed` (each problem has its own generator). */
export function lemmaProblem(
  seed: number,
  index: number,
  o: LemmaOptions = TRAIN_OPTIONS,
): LemmaProblem {
  const rng = mulberry32((seed * 0x9e3779b1 + index * 0x85ebca6b) >>> 0);
  const pick = (n: number) => Math.floor(rng() * n);
  const facts = Array.from({ length: FACT_NAMES.length }, () => pick(10));
  const stages = o.minStages + pick(o.maxStages - o.minStages + 1);
  const lifetime = o.lifetimes[pick(o.lifetimes.length)] as number;
  const finalFact = pick(FACT_NAMES.length);
  const seedFact = pick(FACT_NAMES.length);
  const prompt =
    facts.map((v, i) => `${FACT_NAMES[i]}=${v};`).join("") +
    `Q${two(stages)}W${lifetime}F${facts[finalFact]}G${facts[seedFact]}`;
  const L = [facts[seedFact] as number];
  let answer = `00:${L[0]}+0=${L[0]};`;
  for (let j = 1; j <= stages; j++) {
    const a = L[j - 1] as number;
    const b = L[Math.max(0, j - lifetime)] as number;
    const c = (a + b) % 10;
    L.push(c);
    answer += `${two(j)}:${a}+${b}=${c};`;
  }
  const vf = facts[finalFact] as number;
  const final = ((L[stages] as number) * vf) % 10;
  answer += `A${L[stages]}*${vf}=${final}.`;
  return {
    facts,
    stages,
    lifetime,
    finalFact,
    seedFact,
    prompt,
    answer,
    lemmas: L.slice(1),
    final,
  };
}

/** Token ids of text in the lemma vocabulary (one per character). */
export function lemmaIds(text: string): number[] {
  return Array.from(text, (ch) => {
    const i = LEMMA_CHARS.indexOf(ch);
    if (i < 0)
      throw new RangeError(`character ${JSON.stringify(ch)} is not in the lemma vocabulary`);
    return i + 3;
  });
}

/** The ids a model trains on: BOS, the prompt, the generation marker, the answer, EOS. */
export function trainingIds(p: LemmaProblem): { ids: number[]; numPrompt: number } {
  const prompt = [LEMMA_BOS, ...lemmaIds(`${p.prompt}>`)];
  return { ids: [...prompt, ...lemmaIds(p.answer), LEMMA_EOS], numPrompt: prompt.length };
}

export interface LemmaScore {
  /** The final answer is right (and the text parses). */
  exact: boolean;
  /** Share of the K lemma values right, line by line. */
  lemmaAccuracy: number;
  /**
   * Share of the K stage lines that follow from the output's own earlier lines (a = its previous
   * c, b = its c w lines back, c = (a + b) mod 10, the right counter): the milestone reads alone,
   * right or wrong from the start (a wrong seed read from the prompt does not count against it).
   */
  chainConsistency: number;
  /** The final line's second factor is F's digit in the prompt (the phoenix read right). */
  phoenix: boolean;
}

/** Checks a generated answer against the problem (exact match of the final value). */
export function checkLemma(p: LemmaProblem, output: string): LemmaScore {
  let right = 0;
  let consistent = 0;
  const lines = output.split(";");
  const line = (j: number) => /^(\d\d):(\d)\+(\d)=(\d)$/.exec(lines[j] ?? "");
  // the output's own lemma values, line by line (NaN where a line does not parse)
  const own = [Number(line(0)?.[4] ?? Number.NaN)];
  for (let j = 1; j <= p.stages; j++) {
    const m = line(j);
    own.push(Number(m?.[4] ?? Number.NaN));
    if (m && Number(m[1]) === j && Number(m[4]) === p.lemmas[j - 1]) right++;
    const [a, b, c] = [Number(m?.[2]), Number(m?.[3]), Number(m?.[4])];
    if (
      m &&
      Number(m[1]) === j &&
      a === own[j - 1] &&
      b === own[Math.max(0, j - p.lifetime)] &&
      c === (a + b) % 10
    )
      consistent++;
  }
  const fin = /A(\d)\*(\d)=(\d)\./.exec(output);
  return {
    exact: fin !== null && Number(fin[3]) === p.final,
    phoenix: fin !== null && Number(fin[2]) === p.facts[p.finalFact],
    lemmaAccuracy: right / p.stages,
    chainConsistency: consistent / p.stages,
  };
}
