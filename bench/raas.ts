/**
 * RaaS and its baselines (README "KV-cache policies"):
 * - accuracy, on the lemma-chain model (--model, trained by scripts/train/train_lemma.py): per
 *   policy and budget, exact-match accuracy, per-lemma accuracy, chain consistency (the
 *   milestone reads alone), phoenix accuracy (the final line reads F's digit from the prompt
 *   right) and mean generated length, overall and by decode length, on
 *   held-out problems (shared/eval/lemma-chain.ts, seed 3; training used seeds 1 and 2). Skipped,
 *   with `accuracy: null`, when the model file is absent.
 * - time and memory, on one forced long decode per policy (EOS ignored) of --curve-model (the
 *   synthetic model, models/synthetic-moe.gguf, unless given: its context is 2048; accuracy plays no part, as in the paper's RQ2): ms per
 *   output token and KV bytes held against decode length, median of 3 runs.
 *
 *   npm run -s bench:raas -- --json [--model PATH] [--curve-model PATH] [--problems N] [--full]
 *     [--no-curves] [--policies dense,raas,...] [--aggregate sum|max]
 *
 * Default: 16 problems, budgets 64 and 128 tokens, curves at budget 128 to 512 tokens (about a
 * minute). --full: 100 problems, budgets 64..256, curves at budgets 128, 64 and 256 to 1920
 * tokens (the README tables; the image, of budget 128, is rendered by scripts/plot-raas.ts).
 * JSON on the last line.
 */
import { existsSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { loadNodeInstance, SYNTHETIC_MODEL_PATH } from "../hosts/node-engine.ts";
import {
  defaultKvCache,
  KV_POLICIES,
  type KvCacheSpec,
  type KvPolicyName,
} from "../shared/engine/kv-policy/spec.ts";
import { GREEDY } from "../shared/engine/sequence.ts";
import {
  checkLemma,
  type LemmaScore,
  lemmaProblem,
  TRAIN_OPTIONS,
  trainingIds,
} from "../shared/eval/lemma-chain.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "models/lemma-moe.gguf" },
    "curve-model": { type: "string" },
    problems: { type: "string" },
    full: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    /** Accuracy only (the curves take most of a --full run). */
    "no-curves": { type: "boolean", default: false },
    kernels: { type: "string", default: "wasm" },
    /** Comma-separated subset of the policies (all by default). */
    policies: { type: "string" },
    /** How page scores combine over layers and heads: sum (the default) or max. */
    aggregate: { type: "string", default: "sum" },
  },
});
const full = values.full === true;
const numProblems = Number(values.problems ?? (full ? 100 : 16));
const budgets = full ? [64, 96, 128, 192, 256] : [64, 128];
const BLOCK = 16;
/** Budgets of the time and memory curves, in tokens. */
const CURVE_BUDGETS = full ? [128, 64, 256] : [128];
const haveModel = existsSync(values.model as string);
const bytes = haveModel ? new Uint8Array(readFileSync(values.model as string)) : new Uint8Array();
const curveBytes = new Uint8Array(readFileSync(values["curve-model"] ?? SYNTHETIC_MODEL_PATH));
const kernels = values.kernels === "js" ? "js" : "wasm";
const aggregate = values.aggregate === "max" ? "max" : "sum";
const problems = Array.from({ length: numProblems }, (_, i) => lemmaProblem(3, i, TRAIN_OPTIONS));

interface Cell {
  policy: KvPolicyName;
  budget: number;
  /** null: the policy refused the budget (raas under the pinned prompt). */
  exactMatch: number | null;
  lemmaAccuracy: number | null;
  /** Share of stage lines that follow from the output's own earlier lines (checkLemma). */
  chainConsistency: number | null;
  /** Share whose final line reads F's digit right (checkLemma's phoenix). */
  phoenixAccuracy: number | null;
  meanGeneratedTokens: number | null;
  meanReferenceTokens: number;
  refused: number;
  /** The same by decode length: problems grouped by their stage count K (9K + 17 tokens with EOS). */
  byLength: LengthCell[] | null;
}

interface LengthCell {
  stages: [number, number];
  referenceTokens: [number, number];
  problems: number;
  exactMatch: number;
  lemmaAccuracy: number;
  chainConsistency: number;
  phoenixAccuracy: number;
}

/** Stage-count groups of the decode-length breakdown (TRAIN_OPTIONS has 4 to 10 stages). */
const LENGTH_GROUPS: [number, number][] = [
  [4, 6],
  [7, 8],
  [9, 10],
];

async function accuracy(policy: KvPolicyName, budget: number): Promise<Cell> {
  const inst = await loadNodeInstance(bytes, {
    kernels,
    maxNumSeqs: 32,
    blockSize: BLOCK,
    maxModelLen: 512,
  });
  const kv: KvCacheSpec = { ...defaultKvCache(BLOCK), policy, budget, aggregate };
  const texts = new Map<string, string>();
  const lens = new Map<string, number>();
  let refused = 0;
  problems.forEach((p, i) => {
    const t = trainingIds(p);
    const prompt = t.ids.slice(0, t.numPrompt);
    // at most twice the reference answer (runaway detector)
    const maxTokens = Math.min(2 * (t.ids.length - t.numPrompt), 512 - prompt.length - 1);
    const err = inst.engine.add(`p${i}`, prompt, { ...GREEDY, maxTokens }, { kvCache: kv });
    if (err) refused++;
    else texts.set(`p${i}`, "");
  });
  while (inst.engine.hasWork()) {
    for (const o of (await inst.engine.step()).outputs) {
      texts.set(o.seqId, (texts.get(o.seqId) ?? "") + o.text);
      lens.set(o.seqId, o.numOutputTokens);
    }
  }
  const ref = problems.reduce((a, p) => a + p.answer.length + 1, 0) / problems.length;
  if (refused > 0) {
    return {
      policy,
      budget,
      exactMatch: null,
      lemmaAccuracy: null,
      chainConsistency: null,
      phoenixAccuracy: null,
      meanGeneratedTokens: null,
      meanReferenceTokens: ref,
      refused,
      byLength: null,
    };
  }
  let exact = 0;
  let lemma = 0;
  let chain = 0;
  let phoenix = 0;
  let gen = 0;
  const scores = problems.map((p, i) => checkLemma(p, texts.get(`p${i}`) ?? ""));
  problems.forEach((_, i) => {
    const s = scores[i] as LemmaScore;
    exact += s.exact ? 1 : 0;
    lemma += s.lemmaAccuracy;
    chain += s.chainConsistency;
    phoenix += s.phoenix ? 1 : 0;
    gen += lens.get(`p${i}`) ?? 0;
  });
  const n = problems.length;
  const byLength = LENGTH_GROUPS.map(([lo, hi]): LengthCell => {
    const ix = problems.flatMap((p, i) => (p.stages >= lo && p.stages <= hi ? [i] : []));
    const sum = (f: (i: number) => number) => ix.reduce((a, i) => a + f(i), 0) / (ix.length || 1);
    return {
      stages: [lo, hi],
      referenceTokens: [9 * lo + 17, 9 * hi + 17],
      problems: ix.length,
      exactMatch: sum((i) => (scores[i]?.exact ? 1 : 0)),
      lemmaAccuracy: sum((i) => scores[i]?.lemmaAccuracy ?? 0),
      chainConsistency: sum((i) => scores[i]?.chainConsistency ?? 0),
      phoenixAccuracy: sum((i) => (scores[i]?.phoenix ? 1 : 0)),
    };
  });
  return {
    policy,
    budget,
    exactMatch: exact / n,
    lemmaAccuracy: lemma / n,
    chainConsistency: chain / n,
    phoenixAccuracy: phoenix / n,
    meanGeneratedTokens: gen / n,
    meanReferenceTokens: ref,
    refused,
    byLength,
  };
}

interface Curve {
  policy: KvPolicyName;
  budget: number;
  /** Decode lengths at which the next two are read. */
  decodeTokens: number[];
  /** Mean ms per output token over the bucket ending at each decode length. */
  msPerToken: number[];
  /** The same in CPU time of this process (less sensitive to other load on a shared machine). */
  cpuMsPerToken: number[];
  /** KV bytes the sequence holds at each decode length (blocks x bytes per block). */
  kvBytes: number[];
}

/** One forced decode (EOS ignored) of `length` tokens: time per token and KV held, by length. */
async function curve(
  policy: KvPolicyName,
  budget: number,
  length: number,
  marks: number[],
): Promise<Curve> {
  const inst = await loadNodeInstance(curveBytes, {
    kernels,
    maxNumSeqs: 1,
    blockSize: BLOCK,
    maxModelLen: 2048,
  });
  // a 64-token prompt (the paper's short-prompt, long-decode shape)
  const prompt = [1, ...Array.from({ length: 63 }, (_, i) => 300 + ((i * 37) % 400))];
  const kv: KvCacheSpec = { ...defaultKvCache(BLOCK), policy, budget };
  const err = inst.engine.add(
    "c",
    prompt,
    { ...GREEDY, maxTokens: length + 1, ignoreEos: true },
    { kvCache: kv },
  );
  if (err) throw new Error(err.message);
  const out: Curve = {
    policy,
    budget,
    decodeTokens: [],
    msPerToken: [],
    cpuMsPerToken: [],
    kvBytes: [],
  };
  let n = 0;
  let last = 0;
  let t0 = performance.now();
  let c0 = process.cpuUsage();
  while (inst.engine.hasWork()) {
    const rep = await inst.engine.step();
    n += rep.numSampled;
    if (marks.includes(n)) {
      const seq = inst.scheduler.running[0];
      out.decodeTokens.push(n);
      out.msPerToken.push((performance.now() - t0) / (n - last));
      const cpu = process.cpuUsage(c0);
      out.cpuMsPerToken.push((cpu.user + cpu.system) / 1000 / (n - last));
      out.kvBytes.push((seq?.blockTable.length ?? 0) * inst.engine.kvBytesPerBlock);
      last = n;
      t0 = performance.now();
      c0 = process.cpuUsage();
    }
  }
  return out;
}

const policies = values.policies
  ? KV_POLICIES.filter((p) => (values.policies as string).split(",").includes(p))
  : KV_POLICIES;
const cells: Cell[] = [];
for (const budget of haveModel ? budgets : []) {
  for (const policy of policies) {
    if (policy === "dense" && budget !== budgets[0]) continue;
    const c = await accuracy(policy, policy === "dense" ? 0 : budget);
    cells.push(c);
    if (!values.json) console.log(JSON.stringify(c));
  }
}
const length = full ? 1920 : 512;
const marks = full ? [64, 128, 256, 512, 768, 1024, 1280, 1536, 1920] : [64, 128, 256, 384, 512];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
if (!values["no-curves"]) await curve("dense", CURVE_BUDGETS[0] as number, length, marks); // warm-up (wasm compilation, allocator)
const curves: Curve[] = [];
for (const [policy, budget] of (values["no-curves"] ? [] : CURVE_BUDGETS).flatMap((b, i) =>
  KV_POLICIES.filter((p) => i === 0 || p !== "dense").map((p) => [p, b] as const),
)) {
  const runs: Curve[] = [];
  for (let r = 0; r < 3; r++) runs.push(await curve(policy, budget, length, marks));
  const first = runs[0] as Curve;
  // median per decode length over the runs: this machine is shared, single runs are noisy
  curves.push({
    ...first,
    msPerToken: first.msPerToken.map((_, i) => median(runs.map((c) => c.msPerToken[i] as number))),
    cpuMsPerToken: first.cpuMsPerToken.map((_, i) =>
      median(runs.map((c) => c.cpuMsPerToken[i] as number)),
    ),
  });
}
const result = {
  model: haveModel ? values.model : null,
  problems: numProblems,
  blockSize: BLOCK,
  kernels,
  aggregate,
  accuracy: haveModel ? cells : null,
  curveModel: values["curve-model"] ?? SYNTHETIC_MODEL_PATH,
  curves,
};
console.log(JSON.stringify(result));
