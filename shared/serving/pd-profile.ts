/**
 * DeepFlow's PD-aware step (Algorithm 1, outer step; §5.3): the offline "heatmap" of completion
 * time per (input length, output length) for PD-colocated and PD-disaggregated serving, the
 * choice between deployments of the two kinds, and the output-length predictor that feeds it.
 * Pure, deterministic; no I/O (the JobExecutor stores the profile and the predictor's JSON).
 *
 * The paper stores `v = JCT_colocated / JCT_disaggregated - 1` and takes its sign. We keep both
 * times so that each can be stretched by its group's current load before comparing: the paper
 * saw PD-aware lose to round-robin at high load because the disaggregated pair overloaded first,
 * and the digest (§12.2) asks for that guard. With equal load the rule is the paper's sign test.
 */
import { assert } from "../assert.ts";
import type { DeploymentMode } from "../types/deployments.ts";

/**
 * Offline profile of one model. `colocatedMs[i][j]` and `pdMs[i][j]` are completion times (any
 * common unit; only ratios matter) for inputs up to `inputBuckets[i]` tokens and outputs up to
 * `outputBuckets[j]` tokens. Buckets are strictly increasing upper bounds.
 */
export interface PdProfile {
  model: string;
  measuredAt: number;
  inputBuckets: number[];
  outputBuckets: number[];
  colocatedMs: number[][];
  pdMs: number[][];
}

/** "bucket": the cell whose bucket covers the length (clamped to the last). "bilinear": the
 * bucket bounds are grid points, interpolated between and clamped outside. */
export type ProfileLookup = "bucket" | "bilinear";

/** Why a profile cannot be used, or null when it can. */
export function checkPdProfile(p: PdProfile): string | null {
  for (const [name, b] of [
    ["inputBuckets", p.inputBuckets],
    ["outputBuckets", p.outputBuckets],
  ] as const) {
    if (b.length === 0) return `${name} is empty`;
    for (let i = 0; i < b.length; i++) {
      const v = b[i] as number;
      if (!Number.isFinite(v) || (i > 0 && v <= (b[i - 1] as number))) {
        return `${name} must be finite and strictly increasing`;
      }
    }
  }
  for (const [name, grid] of [
    ["colocatedMs", p.colocatedMs],
    ["pdMs", p.pdMs],
  ] as const) {
    if (grid.length !== p.inputBuckets.length) return `${name} needs one row per input bucket`;
    for (const row of grid) {
      if (row.length !== p.outputBuckets.length)
        return `${name} needs one column per output bucket`;
      if (row.some((v) => !Number.isFinite(v) || v <= 0)) return `${name} must be finite and > 0`;
    }
  }
  return null;
}

/** Index of the first bucket whose upper bound is >= `x`, clamped to the last bucket. */
export function bucketIndex(buckets: readonly number[], x: number): number {
  for (let i = 0; i < buckets.length; i++) if (x <= (buckets[i] as number)) return i;
  return Math.max(0, buckets.length - 1);
}

/** Lower grid index and weight of `x` between grid points (clamped at both ends). */
function gridPos(points: readonly number[], x: number): { i: number; t: number } {
  const last = points.length - 1;
  if (last <= 0 || x <= (points[0] as number)) return { i: 0, t: 0 };
  if (x >= (points[last] as number)) return { i: last, t: 0 };
  let i = 0;
  while (x > (points[i + 1] as number)) i++;
  const lo = points[i] as number;
  return { i, t: (x - lo) / ((points[i + 1] as number) - lo) };
}

function cell(grid: readonly number[][], i: number, j: number): number {
  return (grid[i] as number[])[j] as number;
}

/**
 * Expected completion time of a request with `inputTokens` in and `outputTokens` out under
 * `mode`, read from a profile that passed `checkPdProfile`.
 */
export function profileMs(
  p: PdProfile,
  mode: DeploymentMode,
  inputTokens: number,
  outputTokens: number,
  lookup: ProfileLookup = "bucket",
): number {
  const grid = mode === "pd" ? p.pdMs : p.colocatedMs;
  if (lookup === "bucket") {
    return cell(
      grid,
      bucketIndex(p.inputBuckets, inputTokens),
      bucketIndex(p.outputBuckets, outputTokens),
    );
  }
  const r = gridPos(p.inputBuckets, inputTokens);
  const c = gridPos(p.outputBuckets, outputTokens);
  const r1 = Math.min(r.i + 1, p.inputBuckets.length - 1);
  const c1 = Math.min(c.i + 1, p.outputBuckets.length - 1);
  const top = cell(grid, r.i, c.i) * (1 - c.t) + cell(grid, r.i, c1) * c.t;
  const bottom = cell(grid, r1, c.i) * (1 - c.t) + cell(grid, r1, c1) * c.t;
  return top * (1 - r.t) + bottom * r.t;
}

export interface PdGroupCandidate {
  deploymentId: string;
  mode: DeploymentMode;
  /** Current load per instance of the group's busiest role, in sequences (see scheduling.ts). */
  pressure: number;
}

export interface PdGroupCost {
  deploymentId: string;
  mode: DeploymentMode;
  pressure: number;
  /** Profile time for this request; null without a usable profile. */
  expectedMs: number | null;
  /** expectedMs x (1 + queueFactor x pressure), divided by (1 + pdBias) for PD groups. */
  adjustedMs: number | null;
}

/** "heatmap": the measured profile; "default-heatmap": the derived one (default-heatmap.ts). */
export type PdGroupReason =
  | "only-group"
  | "one-mode"
  | "heatmap"
  | "default-heatmap"
  | "no-profile";

export interface PdGroupChoice {
  deploymentId: string;
  mode: DeploymentMode;
  reason: PdGroupReason;
  costs: PdGroupCost[];
}

export interface PdChoiceOptions {
  /** Stretch of the expected time per sequence already on each instance of the group. */
  queueFactor: number;
  /** Lean towards PD when unsure (the paper's asymmetry, §5.3): PD wins ties within this. */
  pdBias: number;
  lookup: ProfileLookup;
}

export const DEFAULT_PD_CHOICE: PdChoiceOptions = { queueFactor: 0.1, pdBias: 0, lookup: "bucket" };

const usableProfile = (p: PdProfile | null) =>
  p !== null && checkPdProfile(p) === null ? p : null;

/**
 * Algorithm 1's outer step: the deployment whose profile time for (`inputTokens`,
 * `outputTokens`), stretched by its load, is lowest; the measured `profile` when usable, else
 * `fallback` (the default heatmap). One group: it. One mode only, or neither profile usable: the
 * least-pressured group. Ties go to PD (mistakes there are cheap), then to the first listed.
 * @throws InvariantError when `groups` is empty.
 */
export function choosePdGroup(
  groups: readonly PdGroupCandidate[],
  profile: PdProfile | null,
  inputTokens: number,
  outputTokens: number,
  opts: PdChoiceOptions = DEFAULT_PD_CHOICE,
  fallback: PdProfile | null = null,
): PdGroupChoice {
  assert(groups.length > 0, "no deployment to choose from");
  const measured = usableProfile(profile);
  const usable = measured ?? usableProfile(fallback);
  const costs = groups.map((g): PdGroupCost => {
    const expectedMs = usable
      ? profileMs(usable, g.mode, inputTokens, outputTokens, opts.lookup)
      : null;
    const bias = g.mode === "pd" ? 1 + opts.pdBias : 1;
    const adjustedMs =
      expectedMs === null ? null : (expectedMs * (1 + opts.queueFactor * g.pressure)) / bias;
    return {
      deploymentId: g.deploymentId,
      mode: g.mode,
      pressure: g.pressure,
      expectedMs,
      adjustedMs,
    };
  });
  const oneMode = groups.every((g) => g.mode === (groups[0] as PdGroupCandidate).mode);
  const source = measured ? "heatmap" : usable ? "default-heatmap" : "no-profile";
  const reason = groups.length === 1 ? "only-group" : oneMode ? "one-mode" : source;
  const score = (c: PdGroupCost) =>
    c.adjustedMs !== null && reason === source ? c.adjustedMs : c.pressure;
  let best = costs[0] as PdGroupCost;
  for (const c of costs) {
    const d = score(c) - score(best);
    if (d < 0 || (d === 0 && c.mode === "pd" && best.mode !== "pd")) best = c;
  }
  return { deploymentId: best.deploymentId, mode: best.mode, reason, costs };
}

// --- output-length prediction -------------------------------------------------------------

export interface PredictorOptions {
  /** Completed requests remembered (a ring; the oldest is overwritten). */
  capacity: number;
  /** Prediction before enough history exists. */
  defaultOutputTokens: number;
  /** History needed before it is used (for the similar-length subset, then for all). */
  minSamples: number;
  /** Prompts within this factor of the request's length count as similar. */
  similarFactor: number;
}

export const DEFAULT_PREDICTOR: PredictorOptions = {
  capacity: 256,
  defaultOutputTokens: 128,
  minSamples: 4,
  similarFactor: 2,
};

export interface OutputLengthPredictorJson {
  version: 1;
  model: string;
  options: PredictorOptions;
  /** [numPromptTokens, numOutputTokens], oldest first. */
  history: [number, number][];
}

function median(xs: number[]): number {
  xs.sort((a, b) => a - b);
  const m = xs.length >> 1;
  return xs.length % 2 === 1 ? (xs[m] as number) : ((xs[m - 1] as number) + (xs[m] as number)) / 2;
}

/**
 * Predicts a request's output length for the PD step, in place of the paper's OPT-125M bucket
 * classifier (too heavy per request in a Worker; digest §12.2): the median output of recent
 * completed requests of the model with a similar prompt length (within `similarFactor`), else of
 * all recent requests, else `defaultOutputTokens`; never above the request's `max_tokens`.
 * Median rather than mean: output lengths are heavy-tailed. Observed lengths are already capped
 * by each request's own max_tokens, so the prediction errs short, which errs towards PD.
 */
export class OutputLengthPredictor {
  private readonly prompts: number[] = [];
  private readonly outputs: number[] = [];
  /** Next slot to overwrite once the ring is full. */
  private head = 0;

  constructor(
    readonly model: string,
    readonly options: PredictorOptions = DEFAULT_PREDICTOR,
  ) {
    assert(options.capacity > 0 && options.minSamples > 0, "predictor needs a capacity");
    assert(options.similarFactor >= 1, "similarFactor must be >= 1");
  }

  get numSamples(): number {
    return this.outputs.length;
  }

  /** Records a completed request of this model. */
  observe(numPromptTokens: number, numOutputTokens: number): void {
    if (this.outputs.length < this.options.capacity) {
      this.prompts.push(numPromptTokens);
      this.outputs.push(numOutputTokens);
      return;
    }
    this.prompts[this.head] = numPromptTokens;
    this.outputs[this.head] = numOutputTokens;
    this.head = (this.head + 1) % this.options.capacity;
  }

  /** Predicted output tokens (>= 1 unless `maxTokens` < 1) for a prompt of `numPromptTokens`. */
  predict(numPromptTokens: number, maxTokens: number): number {
    const { minSamples, similarFactor, defaultOutputTokens } = this.options;
    const lo = numPromptTokens / similarFactor;
    const hi = numPromptTokens * similarFactor;
    const similar: number[] = [];
    for (let i = 0; i < this.prompts.length; i++) {
      const p = this.prompts[i] as number;
      if (p >= lo && p <= hi) similar.push(this.outputs[i] as number);
    }
    let guess = defaultOutputTokens;
    if (similar.length >= minSamples) guess = median(similar);
    else if (this.outputs.length >= minSamples) guess = median([...this.outputs]);
    return Math.min(maxTokens, Math.max(1, Math.round(guess)));
  }

  toJSON(): OutputLengthPredictorJson {
    const history: [number, number][] = [];
    const n = this.outputs.length;
    const start = n < this.options.capacity ? 0 : this.head;
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      history.push([this.prompts[i] as number, this.outputs[i] as number]);
    }
    return { version: 1, model: this.model, options: { ...this.options }, history };
  }

  /** Restores a `toJSON()` snapshot. @throws InvariantError on an unknown version. */
  static fromJSON(json: OutputLengthPredictorJson): OutputLengthPredictor {
    assert(json.version === 1, `unknown predictor version ${String(json.version)}`);
    const p = new OutputLengthPredictor(json.model, json.options);
    for (const [prompt, output] of json.history) p.observe(prompt, output);
    return p;
  }
}
