/**
 * Pure rules of a scale-up: which tier each new instance loads from, and the tree broadcast of
 * NPU-fork (every finished copy becomes a source for the next wave), and the arena an instance
 * needs for its model (weights + workspace + a KV share, capped by the NPU budget) with the
 * options it builds the model with.
 */
import type { ServingConfig } from "../config.ts";
import { type InstanceOptions, planMemory } from "../engine/instance.ts";
import type { GgufFile } from "../gguf/gguf.ts";
import { modelConfigFromGguf } from "../model/config.ts";
import type { WeightSelection } from "../model/weights.ts";
import type { DeploymentRecord } from "../types/deployments.ts";
import {
  type InstanceStatus,
  type LoadPath,
  noBytes,
  type RoleCounts,
  SCALABLE_ROLES,
  type ScalableRole,
  type WeightSource,
} from "../types/instances.ts";

/** Bytes per chunk of a staged copy (a storage value holds about 2 MB). */
export const WEIGHT_CHUNK_BYTES = 2 ** 20;

export function numChunks(sizeBytes: number): number {
  return Math.ceil(sizeBytes / WEIGHT_CHUNK_BYTES);
}

/**
 * Tree broadcast over `numSources` serving instances and `numTargets` new ones: nodes
 * 0..numSources-1 are the sources, numSources.. the targets in order. In wave r the holders are
 * the first numSources * 2^r nodes and each sends to one new node, so node j gets its copy from
 * node j - numSources * 2^r. Returns, for each target, the node it copies from.
 * With no source, target 0 has no parent (it loads from a colder tier) and is the tree's root.
 */
export function forkParents(numSources: number, numTargets: number): (number | null)[] {
  const s = Math.max(numSources, 0);
  // with no source, the first target is the root and the rest form a tree over it
  const base = s === 0 ? 1 : s;
  const out: (number | null)[] = [];
  for (let t = 0; t < numTargets; t++) {
    if (s === 0 && t === 0) {
      out.push(null);
      continue;
    }
    const j = s + t;
    let holders = base;
    while (holders * 2 <= j) holders *= 2;
    out.push(j - holders);
  }
  return out;
}

/**
 * The source of each of `numTargets` new instances under `path`: `r2` and `staged` load every
 * one from that tier; `fork` copies from `sources` (serving peers) in a tree broadcast, the root
 * loading from the staged tier when `staged`, else from R2, when there is no peer; `auto` and
 * `pool-fork` plan as `fork` (they differ in where the Npus come from). Targets are given as node indexes; `instanceIds` names the nodes in order
 * (sources, then targets).
 */
export function planSources(
  path: LoadPath,
  sources: readonly string[],
  targets: readonly string[],
  staged: boolean,
): { source: WeightSource; after: string | null }[] {
  if (path === "r2" || path === "staged") {
    return targets.map(() => ({ source: { tier: path }, after: null }));
  }
  const root: WeightSource = staged ? { tier: "staged" } : { tier: "r2" };
  const nodes = [...sources, ...targets];
  return forkParents(sources.length, targets.length).map((p) => {
    if (p === null) return { source: root, after: null };
    const from = nodes[p] as string;
    // a parent that is itself a target must finish loading first
    const after = p >= sources.length ? from : null;
    return { source: { tier: "fork", fromInstanceId: from }, after };
  });
}

/** Parts of an instance's memory plan that size its arena. */
export interface ArenaParts {
  weightBytes: number;
  workspaceBytes: number;
  kvBytesPerBlock: number;
  /** KV blocks one full-length sequence needs: the least KV an instance may have. */
  blocksPerSeq: number;
  /** KV blocks the instance could ever use (maxNumSeqs full-length sequences). */
  maxBlocks: number;
}

/** Allocation rounding of the weight tensors (16 bytes each) and alike. */
const ARENA_SLACK_BYTES = 64 * 1024;

/**
 * The arena a model's instance reserves: weights + workspace + KV blocks for `kvShareBytes`
 * (at least one full-length sequence, at most what it could use), never over `budgetBytes`.
 */
export function arenaBytes(p: ArenaParts, kvShareBytes: number, budgetBytes: number): number {
  const blocks = Math.min(
    Math.max(Math.floor(kvShareBytes / p.kvBytesPerBlock), p.blocksPerSeq),
    p.maxBlocks,
  );
  const want = p.weightBytes + p.workspaceBytes + blocks * p.kvBytesPerBlock + ARENA_SLACK_BYTES;
  return Math.min(want, budgetBytes);
}

/**
 * How an NPU builds the model in `file`: the instance options (the serving config's batch limits,
 * the role's weight selection and activation workspaces) and the arena it reserves (arenaBytes
 * with the configured KV share and NPU budget). @throws KernelMemoryError when it does not fit.
 */
export function npuLoadPlan(
  file: GgufFile,
  cfg: ServingConfig,
  role: { weights: WeightSelection; workspaces: number },
): { opts: InstanceOptions; arena: number } {
  const opts = {
    maxNumSeqs: cfg.maxNumSeqs,
    maxNumBatchedTokens: cfg.maxNumBatchedTokens,
    blockSize: cfg.blockSize,
    ...role,
  };
  const config = modelConfigFromGguf(file);
  const plan = planMemory(file, config, cfg.npuMemoryBudgetBytes, opts);
  const blocksPerSeq = Math.ceil(config.maxPositionEmbeddings / cfg.blockSize);
  const arena = arenaBytes(
    { ...plan, blocksPerSeq, maxBlocks: blocksPerSeq * cfg.maxNumSeqs },
    cfg.npuKvCacheBytes,
    cfg.npuMemoryBudgetBytes,
  );
  return { opts, arena };
}

/**
 * One role's move toward `want` instances, given its live instances oldest first: how many to
 * start, and which serving ones to drain (newest first). Draining ones are not counted.
 */
export function roleMove<S extends { role: string; state: string }>(
  live: readonly S[],
  role: string,
  want: number,
): { start: number; drain: S[] } {
  const mine = live.filter((s) => s.role === role && s.state !== "draining");
  const serving = mine.filter((s) => s.state === "serving").reverse();
  return {
    start: Math.max(0, want - mine.length),
    drain: serving.slice(0, Math.max(0, mine.length - want)),
  };
}

/** `ids` sorted into `order` (the instances' creation order), whatever order they came in. */
export function inCreationOrder(ids: readonly string[], order: readonly string[]): string[] {
  return [...ids].sort((a, b) => order.indexOf(a) - order.indexOf(b));
}

/**
 * The deployment with its scaling target set to `target`; scaledAt moves to `now` only when the
 * target changed (the autoscaler's cool-down counts from the last change).
 */
export function withTarget(d: DeploymentRecord, target: RoleCounts, now: number): DeploymentRecord {
  const same = SCALABLE_ROLES.every((r) => d.scaling.target[r] === target[r]);
  const scaledAt = same ? d.scaling.scaledAt : now;
  return { ...d, scaling: { ...d.scaling, target, scaledAt } };
}

/** A just-reserved instance's status: reserve timed, nothing loaded yet. */
export function reservedInstance(
  r: { id: string; fromPool: boolean; reserveMs: number },
  deploymentId: string,
  role: ScalableRole,
  source: WeightSource,
  now: number,
): InstanceStatus {
  return {
    id: r.id,
    deploymentId,
    role,
    state: "reserved",
    fromPool: r.fromPool,
    source,
    stepsMs: { reserve: r.reserveMs },
    bytesByTier: noBytes(),
    createdAt: now,
    servingAt: null,
    error: null,
  };
}

/**
 * Fork sources for a load of `d`'s weights: the `serving` instances whose deployment is active
 * and serves the same model at the same generation.
 */
export function forkSources(
  serving: readonly InstanceStatus[],
  deployment: (id: string) => DeploymentRecord | null,
  d: DeploymentRecord,
): string[] {
  return serving
    .filter((s) => {
      const of = deployment(s.deploymentId);
      return of?.status === "active" && of.model === d.model && of.generation === d.generation;
    })
    .map((s) => s.id);
}
