/**
 * moe-attention against colocated at equal DO count (Node, one thread, the in-process fabric of
 * hosts/moe-local.ts and the same shared/ code and wasm kernels as the DOs):
 *
 * - decode throughput (per wall second, and per CPU second of this process, which time other
 *   processes take on a shared machine does not lower) and group-step latency at 1 and 32
 *   sequences: colocated (4 instances, the sequences spread over them, stepped one after another)
 *   against A=2 attention + E=2 expert ranks;
 * - compute per component (attention ranks, expert ranks) and the rest (dispatch, combine,
 *   message encoding, the in-process fabric) as shares of a step;
 * - the critical path as if each DO had its own core: per step, per MoE layer, the slowest
 *   attention rank's compute plus the slowest expert rank's compute (communication taken as free,
 *   the final norm, classifier and sampling left out); colocated: per round, the slowest instance;
 * - the same moe-attention instance with two ping-ponging micro-batches per attention rank
 *   (shared/moe/ping-pong.ts) against one, and its critical path with the two sides of each
 *   layer overlapped (criticalPathMs);
 * - the mean batch each expert sees for A = 1, 2, 4 (E = 2, 8 sequences per attention rank);
 * - EPLB under skew (32 copies of one prompt, A=2, E=4): imbalance and step latency on the
 *   primary map and, on a fresh instance with the same workload, on the rebalanced map.
 *
 * Each throughput figure is the median run of `--runs` (colocated and moe-attention runs
 * alternate, so a busy machine slows both alike).
 *
 *   npm run -s bench:moe -- --json [--model PATH] [--tokens N] [--runs N]
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import {
  applyMapLocal,
  createLocalMoe,
  type LocalMoe,
  rebalanceLocal,
} from "../hosts/moe-local.ts";
import { loadNodeInstance, SYNTHETIC_MODEL_PATH } from "../hosts/node-engine.ts";
import type { ModelInstance } from "../shared/engine/instance.ts";
import { GREEDY } from "../shared/engine/sequence.ts";
import type { StepComm } from "../shared/fabric/comm.ts";
import { imbalance, rankLoads } from "../shared/serving/eplb.ts";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    tokens: { type: "string", default: "32" },
    runs: { type: "string", default: "3" },
    json: { type: "boolean", default: false },
  },
});
const bytes = new Uint8Array(readFileSync(values.model ?? SYNTHETIC_MODEL_PATH));
const numTokens = Number(values.tokens);
const PROMPTS = [
  "Once upon a time",
  "The little dog",
  "Hello! Who are you?",
  "A cat sat on",
  "Tom said",
];
const DOS = 4;
const params = { ...GREEDY, maxTokens: numTokens, ignoreEos: true };
const runs = Number(values.runs);
/**
 * This process's CPU time in ms (getrusage: tick-sampled, so only for whole runs): throughput per
 * CPU second, which time other processes take on a shared machine does not lower.
 */
const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const round = (x: number, d = 3) => Number(x.toFixed(d));
/** The run with the median tokensPerS. */
function median<T extends { tokensPerS: number }>(xs: T[]): T {
  return [...xs].sort((a, b) => a.tokensPerS - b.tokensPerS)[Math.floor(xs.length / 2)] as T;
}

function promptIds(inst: ModelInstance, i: number, skew: boolean): number[] {
  return inst.tokenizer.encode(
    skew ? "The little model said hello" : (PROMPTS[i % PROMPTS.length] as string),
  );
}

async function colocated(numSeqs: number) {
  const insts = await Promise.all(
    Array.from({ length: DOS }, () => loadNodeInstance(bytes, { kernels: "wasm", maxNumSeqs: 32 })),
  );
  for (let i = 0; i < numSeqs; i++) {
    const inst = insts[i % DOS] as ModelInstance;
    inst.engine.add(`s${i}`, promptIds(inst, i, false), params);
  }
  let generated = 0;
  let rounds = 0;
  let critical = 0;
  const t0 = performance.now();
  const c0 = cpuMs();
  while (insts.some((x) => x.engine.hasWork())) {
    let slowest = 0;
    for (const inst of insts) {
      if (!inst.engine.hasWork()) continue;
      const s0 = performance.now();
      generated += (await inst.engine.step()).numSampled;
      slowest = Math.max(slowest, performance.now() - s0);
    }
    critical += slowest;
    rounds++;
  }
  const ms = performance.now() - t0;
  const cpu = cpuMs() - c0;
  return {
    tokensPerS: round((generated / ms) * 1000, 1),
    tokensPerCpuS: round((generated / cpu) * 1000, 1),
    msPerStep: round(ms / rounds),
    criticalPathTokensPerS: round((generated / critical) * 1000, 1),
  };
}

interface RunStats {
  generated: number;
  ms: number;
  cpuMs: number;
  steps: number;
  attention: StepComm[][];
  experts: StepComm[][];
}

async function runMoe(m: LocalMoe, numSeqs: number, skew: boolean): Promise<RunStats> {
  const first = m.attention[0] as ModelInstance;
  for (let i = 0; i < numSeqs; i++) {
    const ids = promptIds(first, i, skew);
    const a = m.group.pick(ids.length + numTokens) ?? 0;
    m.group.ranks[a]?.engine.add(`r${i}`, ids, params);
  }
  const stepFrom = m.group.ranks[0]?.moe.step ?? 0;
  // counters kept as they are made (a run can outlast COMM_HISTORY entries, ping-pong twice so)
  const attention = m.group.ranks.map(() => new Map<string, StepComm>());
  const experts = m.experts.map(() => new Map<string, StepComm>());
  const keep = (into: Map<string, StepComm>[], lists: StepComm[][]) =>
    lists.forEach((list, i) => {
      for (const e of list) if (e.step >= stepFrom) into[i]?.set(`${e.step}/${e.layer}`, e);
    });
  let generated = 0;
  let steps = 0;
  const t0 = performance.now();
  const c0 = cpuMs();
  while (m.group.hasWork()) {
    for (const r of await m.group.step()) generated += r?.numSampled ?? 0;
    steps++;
    keep(
      attention,
      m.group.ranks.map((r) => r.moe.counters.list()),
    );
    keep(
      experts,
      m.experts.map((e) => e.counters.list()),
    );
  }
  const ms = performance.now() - t0;
  return {
    generated,
    ms,
    cpuMs: cpuMs() - c0,
    steps,
    attention: attention.map((x) => [...x.values()]),
    experts: experts.map((x) => [...x.values()]),
  };
}

/** Per (exchange step, layer): the slowest rank's compute. */
function slowest(perRank: StepComm[][]): Map<string, number> {
  const worst = new Map<string, number>();
  for (const list of perRank) {
    for (const e of list) {
      const k = `${e.step}/${e.layer}`;
      worst.set(k, Math.max(worst.get(k) ?? 0, e.computeMs));
    }
  }
  return worst;
}

/**
 * The critical path with a core per DO and free communication: per group step, the attention
 * side and the expert side are two machines; micro-batch m's layer l needs its attention
 * compute (the slowest attention rank's), then its experts' (the slowest expert rank's), and
 * its next layer waits for those. Each side takes work in (layer, micro-batch) order, so with
 * two micro-batches one's experts overlap the other's attention; with one it is the plain sum.
 */
function criticalPathMs(r: RunStats, microBatches: number): number {
  const att = slowest(r.attention);
  const exp = slowest(r.experts);
  const steps = new Set<number>();
  const layers = new Set<number>();
  for (const list of r.attention) {
    for (const e of list) {
      steps.add(Math.floor(e.step / microBatches));
      layers.add(e.layer);
    }
  }
  const order = [...layers].sort((a, b) => a - b);
  let total = 0;
  for (const g of steps) {
    let attFree = 0;
    let expFree = 0;
    const ready = Array(microBatches).fill(0) as number[];
    for (const l of order) {
      for (let mb = 0; mb < microBatches; mb++) {
        const k = `${g * microBatches + mb}/${l}`;
        const aEnd = Math.max(attFree, ready[mb] as number) + (att.get(k) ?? 0);
        attFree = aEnd;
        expFree = Math.max(expFree, aEnd) + (exp.get(k) ?? 0);
        ready[mb] = expFree;
      }
    }
    total += Math.max(...ready);
  }
  return total;
}

const total = (perRank: StepComm[][]) => perRank.flat().reduce((a, e) => a + e.computeMs, 0);

function summarize(r: RunStats, microBatches = 1) {
  const attn = total(r.attention);
  const exp = total(r.experts);
  const critical = criticalPathMs(r, microBatches);
  return {
    tokensPerS: round((r.generated / r.ms) * 1000, 1),
    tokensPerCpuS: round((r.generated / r.cpuMs) * 1000, 1),
    msPerStep: round(r.ms / r.steps),
    share: {
      attentionCompute: round(attn / r.ms),
      expertCompute: round(exp / r.ms),
      commAndOther: round(Math.max(0, r.ms - attn - exp) / r.ms),
    },
    criticalPathMsPerStep: round(critical / r.steps),
    criticalPathTokensPerS: round((r.generated / critical) * 1000, 1),
  };
}

async function moe(A: number, E: number, pingPong = false) {
  return createLocalMoe(bytes, {
    attention: A,
    experts: E,
    instance: { maxNumSeqs: 32 },
    pingPong,
  });
}

const throughput: Record<string, unknown>[] = [];
for (const numSeqs of [1, 32]) {
  const cs: Awaited<ReturnType<typeof colocated>>[] = [];
  const ms: ReturnType<typeof summarize>[] = [];
  const pps: ReturnType<typeof summarize>[] = [];
  for (let r = 0; r < runs; r++) {
    cs.push(await colocated(numSeqs));
    ms.push(summarize(await runMoe(await moe(2, 2), numSeqs, false)));
    pps.push(summarize(await runMoe(await moe(2, 2, true), numSeqs, false), 2));
  }
  const c = median(cs);
  const m = median(ms);
  const pp = median(pps);
  throughput.push({
    numSeqs,
    dos: DOS,
    colocated: c,
    moeAttention: { attention: 2, experts: 2, ...m },
    ratio: round(m.tokensPerS / c.tokensPerS),
    cpuRatio: round(m.tokensPerCpuS / c.tokensPerCpuS),
    criticalPathRatio: round(m.criticalPathTokensPerS / c.criticalPathTokensPerS),
    // two ping-ponging micro-batches per attention rank, against one
    pingPong: {
      ...pp,
      ratioToOne: round(pp.tokensPerS / m.tokensPerS),
      cpuRatioToOne: round(pp.tokensPerCpuS / m.tokensPerCpuS),
      criticalPathRatioToOne: round(pp.criticalPathTokensPerS / m.criticalPathTokensPerS),
    },
  });
}

const expertBatch: Record<string, number>[] = [];
for (const A of [1, 2, 4]) {
  const m = await moe(A, 2);
  await runMoe(m, 8 * A, false);
  const s = m.experts.map((e) => e.stats());
  const calls = s.reduce((a, x) => a + x.expertCalls, 0);
  const rows = s.reduce((a, x) => a + x.expertRows, 0);
  expertBatch.push({ attention: A, experts: 2, meanExpertBatch: round(rows / calls, 2) });
}

const skew = await moe(2, 4);
const before = await runMoe(skew, 32, true);
const loadsBefore = await rebalanceLocal(skew);
// the same workload on a fresh instance (no prefix cache, no warm state) with the new map
const balanced = await moe(2, 4);
await applyMapLocal(balanced, skew.map.current);
const after = await runMoe(balanced, 32, true);
const loadsAfter = rankLoads(balanced.experts.map((e) => e.takeTokenCounts()));
const meanImb = (ls: number[][]) => round(ls.reduce((a, l) => a + imbalance(l), 0) / ls.length);
const eplb = {
  attention: 2,
  experts: 4,
  numSeqs: 32,
  before: { imbalance: meanImb(loadsBefore), ...summarize(before) },
  after: {
    imbalance: meanImb(loadsAfter),
    mapVersion: skew.map.current.version,
    ...summarize(after),
  },
};

const result = {
  bench: "moe",
  model: values.model ?? "synthetic-moe",
  numTokens,
  runs,
  throughput,
  expertBatch,
  eplb,
};
if (!values.json) console.log(JSON.stringify(result, null, 2));
console.log(JSON.stringify(result));
