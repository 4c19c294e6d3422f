/**
 * DeepFlow's distributed scheduling (Algorithm 1) as pure functions of load snapshots: instance
 * load and the balance test, the within-group choice, the baselines (round-robin, least-loaded)
 * and ablations (locality-only, pd-aware-only), and `scheduleRequest`, which runs the PD-aware
 * group step (pd-profile.ts) and then the within-group step. No I/O: the JobExecutor gathers the
 * snapshots, calls this, logs the decision and dispatches the tasks.
 *
 * Load (the paper defines none; digest §6.4, §12.2): the work an instance still owes, in tokens:
 * prompt tokens not yet computed plus decode tokens still to generate, summed over its sequences
 * (`outstandingTokens`). The digest proposes exactly this ("or, more simply, outstanding tokens")
 * and DeepFlow's SuperPod DP dispatcher is greedy on the same quantity; it sees a 16K-token
 * prefill that a sequence count calls "1". When a snapshot does not report it, load falls back to
 * running + waiting sequences, and a group is compared in one unit only: tokens
 * when every snapshot has them, sequences otherwise (`loadMetric`).
 *
 * The within-group step ("deepflow", `chooseInGroup`), when loads are in tokens, weighs prefix
 * locality against load in one unit, as Mooncake's conductor does: each instance's cost is its
 * load plus the prompt tokens it would still have to compute (the prompt less its cached prefix
 * there), i.e. the work queued before this request's first token, plus a tenth of those tokens
 * per sequence already there (the decoding its prefill would stall, `placementCost`); the
 * cheapest instance wins. With equal loads that is the longest cached prefix (Algorithm 1's
 * balanced case); when one instance is far busier, it loses whatever it has cached (the
 * unbalanced case), and in between a prefix counts as the prefill it saves. The paper's binary
 * test (max - min <= max(absolute, relative x mean), `isBalanced`) is still computed and logged;
 * in tokens it no longer switches the rule, because
 * with real prompt lengths (one 8K-token prompt is already a spread) it failed for 271 of 276
 * Mooncake placements and reduced Algorithm 1 to least-loaded (README "Simulator"). In sequences
 * the paper's switch stays (a prefix has no price in that unit).
 */

import type { DeploymentMode, SchedulerPolicy } from "../types/deployments.ts";
import type { InstanceRole } from "../types/records.ts";
import {
  choosePdGroup,
  DEFAULT_PD_CHOICE,
  type OutputLengthPredictor,
  type PdChoiceOptions,
  type PdGroupCost,
  type PdGroupReason,
  type PdProfile,
} from "./pd-profile.ts";
import type { PrefixTree } from "./prefix-tree.ts";

/** What an instance reports about its load (Npu.stats). */
export interface LoadSnapshot {
  instanceId: string;
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
}

export interface InstanceSnapshot extends LoadSnapshot {
  /** Tokens the instance still owes (`outstandingTokens`); absent from older reporters. */
  numOutstandingTokens?: number;
}

export type LoadMetric = "tokens" | "seqs";

/** "tokens" when every snapshot reports outstanding tokens, else "seqs". */
export function loadMetric(snapshots: readonly InstanceSnapshot[]): LoadMetric {
  return snapshots.every((s) => s.numOutstandingTokens !== undefined) ? "tokens" : "seqs";
}

/** An instance's load in `metric` (default: tokens when it reports them). */
export function instanceLoad(s: InstanceSnapshot, metric?: LoadMetric): number {
  const m = metric ?? (s.numOutstandingTokens !== undefined ? "tokens" : "seqs");
  return m === "tokens" ? (s.numOutstandingTokens ?? 0) : s.numRunning + s.numWaiting;
}

export interface BalanceOptions {
  /** Largest spread as a fraction of the mean load. */
  relative: number;
  /** Spread always tolerated, in sequences (metric "seqs"). */
  absoluteSeqs: number;
  /** Spread always tolerated, in tokens (metric "tokens"). */
  absoluteTokens: number;
}

export const DEFAULT_BALANCE: BalanceOptions = {
  relative: 0.2,
  absoluteSeqs: 2,
  absoluteTokens: 512,
};

/** Algorithm 1's `is_load_balanced`: max - min <= max(absolute, relative x mean). */
export function isBalanced(
  snapshots: readonly InstanceSnapshot[],
  opts: BalanceOptions = DEFAULT_BALANCE,
): boolean {
  if (snapshots.length <= 1) return true;
  const metric = loadMetric(snapshots);
  const loads = snapshots.map((s) => instanceLoad(s, metric));
  const spread = Math.max(...loads) - Math.min(...loads);
  const mean = loads.reduce((a, b) => a + b, 0) / loads.length;
  const absolute = metric === "tokens" ? opts.absoluteTokens : opts.absoluteSeqs;
  return spread <= Math.max(absolute, opts.relative * mean);
}

export type InstanceReason = "prefix" | "least-loaded" | "round-robin";

export interface InstanceScore {
  instanceId: string;
  load: number;
  numMatchedBlocks: number;
  /** "deepflow" only: load, uncached prompt tokens and interference there (`placementCost`). */
  cost?: number;
}

export interface InstanceChoice {
  instanceId: string;
  reason: InstanceReason;
  /** The balance test's outcome; null for the baselines, which do not run it. */
  balanced: boolean | null;
  metric: LoadMetric;
  scores: InstanceScore[];
}

function scoresOf(
  snapshots: readonly InstanceSnapshot[],
  matches: ReadonlyMap<string, number>,
): { metric: LoadMetric; scores: InstanceScore[] } {
  const metric = loadMetric(snapshots);
  const scores = snapshots.map((s) => ({
    instanceId: s.instanceId,
    load: instanceLoad(s, metric),
    numMatchedBlocks: matches.get(s.instanceId) ?? 0,
  }));
  return { metric, scores };
}

type Better = (a: InstanceScore, b: InstanceScore) => number;

/** Least load first, then more matched blocks. */
const BY_LOAD: Better = (a, b) => a.load - b.load || b.numMatchedBlocks - a.numMatchedBlocks;
/** More matched blocks first, then least load. */
const BY_PREFIX: Better = (a, b) => b.numMatchedBlocks - a.numMatchedBlocks || a.load - b.load;

/** Index of the best score by `better`; remaining ties: more free blocks, then first listed. */
function bestIndex(
  snapshots: readonly InstanceSnapshot[],
  scores: InstanceScore[],
  better: Better,
): number {
  let best = 0;
  for (let i = 1; i < scores.length; i++) {
    const d =
      better(scores[i] as InstanceScore, scores[best] as InstanceScore) ||
      (snapshots[best] as InstanceSnapshot).numFreeBlocks -
        (snapshots[i] as InstanceSnapshot).numFreeBlocks;
    if (d < 0) best = i;
  }
  return best;
}

/**
 * The least-loaded baseline (and Algorithm 1's `load_aware`). `matches` only breaks ties.
 * @throws Error when `snapshots` is empty (callers check first).
 */
export function chooseLeastLoaded(
  snapshots: readonly InstanceSnapshot[],
  matches: ReadonlyMap<string, number> = new Map(),
): InstanceChoice {
  if (snapshots.length === 0) throw new Error("no instance to choose from");
  const { metric, scores } = scoresOf(snapshots, matches);
  const i = bestIndex(snapshots, scores, BY_LOAD);
  const instanceId = (scores[i] as InstanceScore).instanceId;
  return { instanceId, reason: "least-loaded", balanced: null, metric, scores };
}

/** What the within-group step needs to know about the request. */
export interface PromptShape {
  numPromptTokens: number;
  /** Tokens per prefix-tree block key (the instances' KV block size). */
  blockSize: number;
}

/**
 * Weight of the interference term in `placementCost`: each sequence already on an instance counts
 * a tenth of the request's uncached prompt again. Chosen in the simulator (README "Simulator":
 * 0, 0.1 and 0.3 on the Mooncake trace, 8 instances, two loads, three seeds), not fitted per run.
 */
export const DEFAULT_INTERFERENCE = 0.1;

/**
 * What placing the request on an instance costs, in tokens: the work queued there before its first
 * token (the instance's load plus the prompt tokens it would compute, `u`: all but its cached full
 * blocks, at least one) plus what its prefill costs the `numSeqs` sequences already there,
 * `interference x u x numSeqs`. With chunked prefill those `u` tokens share steps with every
 * sequence on the instance, each of which waits on them between two of its tokens: a 100K-token
 * prompt stalls its neighbours' decoding for tens of seconds, which is where TPOT SLOs are lost
 * under load. So a long uncached prompt goes where few sequences would wait on it, and a short
 * one (or a cached one) is placed on load and locality as before.
 */
export function placementCost(
  load: number,
  numMatchedBlocks: number,
  prompt: PromptShape,
  numSeqs = 0,
  interference = DEFAULT_INTERFERENCE,
): number {
  const cached = Math.max(
    0,
    Math.min(prompt.numPromptTokens - 1, numMatchedBlocks * prompt.blockSize),
  );
  const uncached = prompt.numPromptTokens - cached;
  return load + uncached + interference * uncached * numSeqs;
}

/** Least cost first, then more matched blocks. */
const BY_COST: Better = (a, b) =>
  (a.cost ?? 0) - (b.cost ?? 0) || b.numMatchedBlocks - a.numMatchedBlocks;

/**
 * Algorithm 1's inner step. In tokens: the instance with the least `placementCost` (its running
 * and waiting sequences as `numSeqs`; ties: more matched blocks, more free blocks, first
 * listed). In sequences (a reporter without outstanding tokens), where a prefix cannot be priced
 * against load, the paper's rule: the longest cached
 * prefix when `isBalanced`, else the least loaded. `reason` is "prefix" when the chosen instance
 * has part of the prompt cached and the rule looked at prefixes, "least-loaded" otherwise;
 * `balanced` is the paper's test (logged either way). @throws Error when `snapshots` is empty.
 */
export function chooseInGroup(
  snapshots: readonly InstanceSnapshot[],
  matches: ReadonlyMap<string, number>,
  prompt: PromptShape,
  opts: BalanceOptions = DEFAULT_BALANCE,
  interference = DEFAULT_INTERFERENCE,
): InstanceChoice {
  if (snapshots.length === 0) throw new Error("no instance to choose from");
  const balanced = isBalanced(snapshots, opts);
  const { metric, scores: raw } = scoresOf(snapshots, matches);
  const byCost = metric === "tokens";
  const scores = byCost
    ? raw.map((s, i) => {
        const { numRunning, numWaiting } = snapshots[i] as InstanceSnapshot;
        const seqs = numRunning + numWaiting;
        return {
          ...s,
          cost: placementCost(s.load, s.numMatchedBlocks, prompt, seqs, interference),
        };
      })
    : raw;
  const order = byCost ? BY_COST : balanced ? BY_PREFIX : BY_LOAD;
  const best = scores[bestIndex(snapshots, scores, order)] as InstanceScore;
  const prefix = (byCost || balanced) && best.numMatchedBlocks > 0;
  const reason: InstanceReason = prefix ? "prefix" : "least-loaded";
  return { instanceId: best.instanceId, reason, balanced, metric, scores };
}

/**
 * The locality-only ablation: the longest cached prefix whatever the load (ties: least load,
 * more free blocks, first listed). @throws Error when `snapshots` is empty.
 */
export function chooseByPrefix(
  snapshots: readonly InstanceSnapshot[],
  matches: ReadonlyMap<string, number>,
): InstanceChoice {
  if (snapshots.length === 0) throw new Error("no instance to choose from");
  const { metric, scores } = scoresOf(snapshots, matches);
  const best = scores[bestIndex(snapshots, scores, BY_PREFIX)] as InstanceScore;
  const reason: InstanceReason = best.numMatchedBlocks > 0 ? "prefix" : "least-loaded";
  return { instanceId: best.instanceId, reason, balanced: null, metric, scores };
}

/** Round robin over `n` items: the index for `counter` and the counter to store next. */
export function roundRobin(n: number, counter: number): { index: number; next: number } {
  if (n <= 0) throw new Error("round robin over nothing");
  const c = Number.isSafeInteger(counter) && counter >= 0 ? counter : 0;
  return { index: c % n, next: c + 1 };
}

/** The round-robin baseline over `snapshots` (in the order given). @throws Error when empty. */
export function chooseRoundRobin(
  snapshots: readonly InstanceSnapshot[],
  counter: number,
): { choice: InstanceChoice; next: number } {
  const { index, next } = roundRobin(snapshots.length, counter);
  const { metric, scores } = scoresOf(snapshots, new Map());
  const instanceId = (scores[index] as InstanceScore).instanceId;
  return { choice: { instanceId, reason: "round-robin", balanced: null, metric, scores }, next };
}

// --- the whole request ----------------------------------------------------------------------

export interface InstanceState extends InstanceSnapshot {
  role: InstanceRole;
}

/** A TE group: the instances of one deployment of the model, all in one mode. */
export interface DeploymentState {
  deploymentId: string;
  mode: DeploymentMode;
  policy: SchedulerPolicy;
  instances: readonly InstanceState[];
}

/** Round-robin positions, persisted by the caller: "*" (across deployments), "<id>", "<id>/decode". */
export type RrCounters = Readonly<Record<string, number>>;

export interface ScheduleInput {
  deployments: readonly DeploymentState[];
  /** The prompt's full-block keys (`promptBlockKeys`). */
  blockKeys: readonly string[];
  /** Tokens per block key (the instances' KV block size). */
  blockSize: number;
  numPromptTokens: number;
  maxTokens: number;
  prefixTree: Pick<PrefixTree, "match"> | null;
  predictor: Pick<OutputLengthPredictor, "predict"> | null;
  profile: PdProfile | null;
  /** The default heatmap, used when `profile` is null or unusable (default-heatmap.ts). */
  defaultProfile?: PdProfile | null;
  counters: RrCounters;
}

export interface ScheduleOptions {
  balance: BalanceOptions;
  pd: PdChoiceOptions;
  /** `placementCost`'s interference weight ("deepflow" within a group). */
  interference: number;
}

export const DEFAULT_SCHEDULE: ScheduleOptions = {
  balance: DEFAULT_BALANCE,
  pd: DEFAULT_PD_CHOICE,
  interference: DEFAULT_INTERFERENCE,
};

/** One plain object: log it as is (one line of JSON), then dispatch. */
export interface ScheduleDecision {
  deploymentId: string;
  mode: DeploymentMode;
  policy: SchedulerPolicy;
  /** The colocated instance; null for PD. */
  instanceId: string | null;
  prefillInstanceId: string | null;
  decodeInstanceId: string | null;
  /** How the deployment was chosen; "baseline" when a baseline ran across all deployments. */
  groupReason: PdGroupReason | "baseline";
  /** How the colocated or prefill instance was chosen. */
  reason: InstanceReason;
  balanced: boolean | null;
  metric: LoadMetric;
  numPromptTokens: number;
  numPromptBlocks: number;
  predictedOutputTokens: number;
  /** Per deployment: pressure and profile times (empty for the baselines). */
  groups: PdGroupCost[];
  /** Candidates for the colocated or prefill task. */
  scores: InstanceScore[];
  /** Candidates for the decode task (empty for colocated). */
  decodeScores: InstanceScore[];
}

export interface ScheduleResult {
  decision: ScheduleDecision;
  counters: RrCounters;
}

/** Policies that ignore deployments (no PD step) when every deployment runs them. */
const GROUP_BLIND: readonly SchedulerPolicy[] = ["round-robin", "least-loaded", "locality-only"];

/** The role of the instances that take a deployment's first (or only) task. */
export function entryRole(mode: DeploymentMode): InstanceRole {
  return mode === "pd" ? "prefill" : mode === "moe-attention" ? "attention" : "colocated";
}

/**
 * Instances that take the first task: colocated ones, a PD deployment's prefill ones, or a
 * moe-attention deployment's instance (scored like a colocated one: it runs whole requests).
 */
function entryInstances(d: DeploymentState): InstanceState[] {
  return d.instances.filter((i) => i.role === entryRole(d.mode));
}

function decodeInstances(d: DeploymentState): InstanceState[] {
  return d.mode === "pd" ? d.instances.filter((i) => i.role === "decode") : [];
}

function meanSeqs(xs: readonly InstanceState[]): number {
  return xs.reduce((a, s) => a + s.numRunning + s.numWaiting, 0) / Math.max(1, xs.length);
}

/**
 * A group's pressure for the PD step: mean running + waiting sequences per instance of its
 * busiest role (prefill or decode for PD). In sequences, so `queueFactor` has one meaning
 * whatever the instances report.
 */
export function groupPressure(d: DeploymentState): number {
  if (d.mode !== "pd") return meanSeqs(entryInstances(d));
  return Math.max(meanSeqs(entryInstances(d)), meanSeqs(decodeInstances(d)));
}

/**
 * Schedules one request (Algorithm 1). Deployments that cannot serve (no colocated instance; PD
 * without both a prefill and a decode instance) are skipped; null when none can.
 *
 * - All deployments on the same baseline or locality-only policy: it runs over every entry
 *   instance of every deployment (the paper's round-robin compares against exactly this),
 *   round-robin on counter "*".
 * - Otherwise: the PD-aware step picks the deployment (`choosePdGroup`, predicted output length
 *   from `predictor`, else `maxTokens`), then the deployment's policy picks within it ("deepflow":
 *   `chooseInGroup` over the prefix tree's matches; "pd-aware-only": least loaded).
 * - PD decode instance: least loaded (round robin under "round-robin", counter "<id>/decode").
 *   The prefill side is where a cached prefix saves work; decode receives the KV anyway.
 *
 * The caller then records the prompt's blocks on the chosen colocated or prefill instance with
 * `PrefixTree.insert`, and stores `counters`.
 */
export function scheduleRequest(
  input: ScheduleInput,
  opts: ScheduleOptions = DEFAULT_SCHEDULE,
): ScheduleResult | null {
  const usable = input.deployments.filter(
    (d) => entryInstances(d).length > 0 && (d.mode !== "pd" || decodeInstances(d).length > 0),
  );
  const first = usable[0];
  if (!first) return null;
  const counters: Record<string, number> = { ...input.counters };
  const matches = input.prefixTree?.match(input.blockKeys) ?? new Map<string, number>();
  const predicted = input.predictor
    ? input.predictor.predict(input.numPromptTokens, input.maxTokens)
    : input.maxTokens;
  const prompt = { numPromptTokens: input.numPromptTokens, blockSize: input.blockSize };

  const baseline =
    usable.every((d) => d.policy === first.policy) && GROUP_BLIND.includes(first.policy);
  let deployment: DeploymentState;
  let entry: InstanceChoice;
  let groupReason: ScheduleDecision["groupReason"];
  let groups: PdGroupCost[] = [];
  if (baseline) {
    const all = usable.flatMap((d) => entryInstances(d).map((inst) => ({ d, inst })));
    const snapshots = all.map((e) => e.inst);
    if (first.policy === "round-robin") {
      const rr = chooseRoundRobin(snapshots, counters["*"] ?? 0);
      counters["*"] = rr.next;
      entry = rr.choice;
    } else if (first.policy === "locality-only") {
      entry = chooseByPrefix(snapshots, matches);
    } else {
      entry = chooseLeastLoaded(snapshots, matches);
    }
    deployment = all.find((e) => e.inst.instanceId === entry.instanceId)?.d ?? first;
    groupReason = "baseline";
  } else {
    const candidates = usable.map((d) => ({
      deploymentId: d.deploymentId,
      mode: d.mode,
      pressure: groupPressure(d),
    }));
    const g = choosePdGroup(
      candidates,
      input.profile,
      input.numPromptTokens,
      predicted,
      opts.pd,
      input.defaultProfile ?? null,
    );
    deployment = usable.find((d) => d.deploymentId === g.deploymentId) ?? first;
    groupReason = g.reason;
    groups = g.costs;
    const snapshots = entryInstances(deployment);
    if (deployment.policy === "round-robin") {
      const rr = chooseRoundRobin(snapshots, counters[deployment.deploymentId] ?? 0);
      counters[deployment.deploymentId] = rr.next;
      entry = rr.choice;
    } else if (deployment.policy === "locality-only") {
      entry = chooseByPrefix(snapshots, matches);
    } else if (deployment.policy === "deepflow") {
      entry = chooseInGroup(snapshots, matches, prompt, opts.balance, opts.interference);
    } else {
      entry = chooseLeastLoaded(snapshots, matches);
    }
  }

  let decode: InstanceChoice | null = null;
  if (deployment.mode === "pd") {
    const decodes = decodeInstances(deployment);
    const key = `${deployment.deploymentId}/decode`;
    if (deployment.policy === "round-robin") {
      const rr = chooseRoundRobin(decodes, counters[key] ?? 0);
      counters[key] = rr.next;
      decode = rr.choice;
    } else {
      decode = chooseLeastLoaded(decodes);
    }
  }

  const pd = deployment.mode === "pd";
  const decision: ScheduleDecision = {
    deploymentId: deployment.deploymentId,
    mode: deployment.mode,
    policy: deployment.policy,
    instanceId: pd ? null : entry.instanceId,
    prefillInstanceId: pd ? entry.instanceId : null,
    decodeInstanceId: decode?.instanceId ?? null,
    groupReason,
    reason: entry.reason,
    balanced: entry.balanced,
    metric: entry.metric,
    numPromptTokens: input.numPromptTokens,
    numPromptBlocks: input.blockKeys.length,
    predictedOutputTokens: predicted,
    groups,
    scores: entry.scores,
    decodeScores: decode?.scores ?? [],
  };
  return { decision, counters };
}
