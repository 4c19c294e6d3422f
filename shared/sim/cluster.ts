/**
 * A discrete-event simulation of one colocated deployment of N instances in virtual time that
 * runs the project's own code for every decision: each instance is a real `Scheduler` over a real
 * `KvBlockManager` (batching, chunked prefill, preemption, prefix caching), and each arrival is
 * placed by `scheduleRequest` (Algorithm 1 or a baseline) over `DeploymentState`s built from the
 * instances' scheduler state, with a `PrefixTree`, an `OutputLengthPredictor` and round-robin
 * counters kept as the JobExecutor keeps them (ModelScheduler, PlacementState). Only the maths is
 * replaced: a step's duration comes from the model card (cost-model.ts) and every sampled token
 * is a fixed non-EOS id, with `ignoreEos` and `maxTokens` = the request's output length.
 *
 * Event order at one instant: events run in the order they were queued (events.ts). An arrival
 * is placed at once; an idle instance that receives work starts a step at that instant. A step
 * is planned (`schedule()`) when it starts and applied (`update()`) when it ends, as the Npu's
 * loop does, so a request placed during a step sees that step's planned state.
 *
 * JobExecutor parity: the prefix tree learns a prompt on its instance when the instance first
 * schedules it (the task "running" report); the predictor observes every finished request
 * (prompt and output tokens); each sequence carries the predicted output length
 * (`expectedOutputTokens`), as the Npu sets it from the task. Reports reach the JobExecutor
 * instantly here (the real system sees them after an RPC).
 *
 * A request that can never run on an instance (prompt + output over the context, or more KV
 * blocks than the instance has, or an empty prompt) is failed at arrival, never dropped. Pure.
 */
import type { StepPlan, StepResult } from "../engine/executor.ts";
import { KvBlockManager } from "../engine/kv-block-manager.ts";
import { Scheduler } from "../engine/scheduler.ts";
import { GREEDY, newSequence, outstandingTokens, type Sequence } from "../engine/sequence.ts";
import { OutputLengthPredictor } from "../serving/pd-profile.ts";
import { DEFAULT_MAX_PREFIX_NODES, PrefixTree, promptBlockKeys } from "../serving/prefix-tree.ts";
import {
  type DeploymentState,
  type RrCounters,
  type ScheduleDecision,
  scheduleRequest,
} from "../serving/scheduling.ts";
import type { SchedulerPolicy } from "../types/deployments.ts";
import { type ModelCard, stepFeatures, stepTimeMs } from "./cost-model.ts";
import { EventQueue } from "./events.ts";

/** The token every simulated step samples (any id that is not EOS). */
export const SIM_TOKEN_ID = 3;
const SIM_EOS_ID = 2;

export interface SimRequest {
  id: string;
  arrivalMs: number;
  promptIds: readonly number[];
  outputTokens: number;
}

export interface SimOptions {
  card: ModelCard;
  numInstances: number;
  policy: SchedulerPolicy;
  /** The prefix tree's node budget (default: the JobExecutor's, `DEFAULT_MAX_PREFIX_NODES`). */
  prefixTreeNodes?: number;
  /** The tree indexes every `prefixStride`-th block key only (default 1: every block). */
  prefixStride?: number;
  /** Called with what each placement saw and chose (tests, decision logs). */
  onPlace?: (p: PlacementRecord) => void;
}

export interface PlacementRecord {
  requestId: string;
  atMs: number;
  deployments: DeploymentState[];
  blockKeys: string[];
  counters: RrCounters;
  /** The prefix tree's matches and the predictor's guess at that moment. */
  matches: Map<string, number>;
  predicted: number;
  decision: ScheduleDecision;
}

export interface RequestOutcome {
  id: string;
  arrivalMs: number;
  instanceId: string | null;
  numPromptTokens: number;
  numOutputTokens: number;
  numCachedTokens: number;
  firstTokenMs: number | null;
  finishMs: number | null;
  /** Why it failed, or null when it completed. */
  failure: string | null;
}

export interface SimResult {
  outcomes: RequestOutcome[];
  numSteps: number;
  numPreemptions: number;
  /** Per instance, in order: the virtual ms it spent running steps. */
  busyMs: number[];
}

interface SimInstance {
  id: string;
  scheduler: Scheduler;
  busy: boolean;
  busyMs: number;
}

type SimEvent =
  | { kind: "arrival"; index: number }
  | { kind: "step-end"; instance: SimInstance; plan: StepPlan };

export const SIM_DEPLOYMENT_ID = "sim";

/** Number of KV blocks an instance of `card` has. */
export function numKvBlocks(card: ModelCard): number {
  return Math.floor(card.kvCapacityTokens / card.blockSize);
}

/** Why `req` can never run on an instance of `card`, or null when it can. */
export function unservable(card: ModelCard, req: SimRequest): string | null {
  const total = req.promptIds.length + req.outputTokens;
  if (req.promptIds.length === 0) return "empty prompt";
  if (req.outputTokens < 1) return "no output tokens";
  // the scheduler ends a sequence when it reaches maxModelLen: the last token must fit under it
  if (total > card.maxModelLen) return "context";
  if (Math.ceil(total / card.blockSize) > numKvBlocks(card)) return "kv-capacity";
  return null;
}

export function simulate(requests: readonly SimRequest[], opts: SimOptions): SimResult {
  const { card } = opts;
  const instances: SimInstance[] = Array.from({ length: opts.numInstances }, (_, i) => ({
    id: `i${i}`,
    busy: false,
    busyMs: 0,
    scheduler: new Scheduler(
      {
        maxNumSeqs: card.maxNumSeqs,
        maxNumBatchedTokens: card.maxNumBatchedTokens,
        maxModelLen: card.maxModelLen,
        eosIds: [SIM_EOS_ID],
      },
      new KvBlockManager(numKvBlocks(card), card.blockSize),
    ),
  }));
  const byId = new Map(instances.map((s) => [s.id, s]));
  const tree = new PrefixTree(opts.prefixTreeNodes ?? DEFAULT_MAX_PREFIX_NODES);
  const stride = opts.prefixStride ?? 1;
  const predictor = new OutputLengthPredictor(card.name);
  let counters: RrCounters = {};
  const outcomes: RequestOutcome[] = requests.map((r) => ({
    id: r.id,
    arrivalMs: r.arrivalMs,
    instanceId: null,
    numPromptTokens: r.promptIds.length,
    numOutputTokens: 0,
    numCachedTokens: 0,
    firstTokenMs: null,
    finishMs: null,
    failure: null,
  }));
  /** Per live sequence: its request index and block keys (cleared once learnt). */
  const live = new Map<string, { index: number; blockKeys: string[] | null }>();
  const queue = new EventQueue<SimEvent>();
  requests.forEach((r, index) => {
    queue.push(r.arrivalMs, { kind: "arrival", index });
  });
  let numSteps = 0;
  let numPreemptions = 0;

  const deployments = (): DeploymentState[] => [
    {
      deploymentId: SIM_DEPLOYMENT_ID,
      mode: "colocated",
      policy: opts.policy,
      instances: instances.map((s) => ({
        instanceId: s.id,
        role: "colocated",
        numRunning: s.scheduler.running.length,
        numWaiting: s.scheduler.waiting.length,
        numFreeBlocks: s.scheduler.blocks.numFreeBlocks,
        numOutstandingTokens:
          outstandingTokens(s.scheduler.running) + outstandingTokens(s.scheduler.waiting),
      })),
    },
  ];

  const startStep = (inst: SimInstance, now: number): void => {
    const plan = inst.scheduler.schedule();
    numPreemptions += plan.preemptedSeqIds.length;
    if (plan.seqs.length === 0) {
      inst.busy = false;
      return;
    }
    inst.busy = true;
    numSteps++;
    for (const s of plan.seqs) {
      const l = live.get(s.seqId);
      if (l?.blockKeys) {
        tree.insert(inst.id, l.blockKeys, now);
        l.blockKeys = null;
      }
    }
    const ms = stepTimeMs(card, stepFeatures(plan));
    inst.busyMs += ms;
    queue.push(now + ms, {
      kind: "step-end",
      instance: inst,
      plan,
    });
  };

  const arrive = (index: number, now: number): void => {
    const req = requests[index] as SimRequest;
    const out = outcomes[index] as RequestOutcome;
    const why = unservable(card, req);
    if (why) {
      out.failure = why;
      return;
    }
    const blockKeys = promptBlockKeys(req.promptIds, card.blockSize).filter(
      (_, i) => (i + 1) % stride === 0,
    );
    const states = deployments();
    const matches = tree.match(blockKeys);
    const predicted = predictor.predict(req.promptIds.length, req.outputTokens);
    const before = counters;
    const result = scheduleRequest({
      deployments: states,
      blockKeys,
      blockSize: card.blockSize * stride,
      numPromptTokens: req.promptIds.length,
      maxTokens: req.outputTokens,
      prefixTree: tree,
      predictor,
      profile: null,
      counters,
    });
    const inst = result ? byId.get(result.decision.instanceId ?? "") : undefined;
    if (!result || !inst) {
      out.failure = "no-instance";
      return;
    }
    counters = result.counters;
    opts.onPlace?.({
      requestId: req.id,
      atMs: now,
      deployments: states,
      blockKeys,
      counters: before,
      matches,
      predicted,
      decision: result.decision,
    });
    out.instanceId = inst.id;
    const seq = newSequence(req.id, req.promptIds, {
      ...GREEDY,
      maxTokens: req.outputTokens,
      ignoreEos: true,
    });
    seq.expectedOutputTokens = predicted;
    live.set(req.id, { index, blockKeys });
    inst.scheduler.add(seq);
    if (!inst.busy) startStep(inst, now);
  };

  const endStep = (inst: SimInstance, plan: StepPlan, now: number): void => {
    const result: StepResult = {
      sampled: plan.seqs.map((s) =>
        s.sample ? { tokenId: SIM_TOKEN_ID, logprob: Number.NaN, topLogprobs: [] } : null,
      ),
    };
    for (const u of inst.scheduler.update(plan, result)) {
      const l = live.get(u.seq.seqId);
      if (!l) continue;
      const out = outcomes[l.index] as RequestOutcome;
      if (u.sampled && out.firstTokenMs === null) out.firstTokenMs = now;
      if (u.finished) finish(u.seq, out, now);
    }
    startStep(inst, now);
  };

  const finish = (seq: Sequence, out: RequestOutcome, now: number): void => {
    live.delete(seq.seqId);
    out.finishMs = now;
    out.numOutputTokens = seq.tokenIds.length - seq.numPromptTokens;
    out.numCachedTokens = seq.numCachedTokens;
    predictor.observe(seq.numPromptTokens, out.numOutputTokens);
  };

  for (let e = queue.pop(); e; e = queue.pop()) {
    if (e.event.kind === "arrival") arrive(e.event.index, e.at);
    else endStep(e.event.instance, e.event.plan, e.at);
  }
  for (const s of instances) {
    if (s.scheduler.numUnfinished > 0) throw new Error(`instance ${s.id} ended with work left`);
  }
  return { outcomes, numSteps, numPreemptions, busyMs: instances.map((s) => s.busyMs) };
}
