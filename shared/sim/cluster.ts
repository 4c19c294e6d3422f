/**
 * A discrete-event simulation of a cluster in virtual time that runs the project's own code for
 * every decision: each instance is a real `Scheduler` over a real `KvBlockManager` (batching,
 * chunked prefill, preemption, prefix caching; instance.ts), and each arrival is placed by
 * `scheduleRequest` (Algorithm 1, a baseline or an ablation) over `DeploymentState`s built from
 * the instances' scheduler state, with a `PrefixTree`, an `OutputLengthPredictor`, the model's PD
 * profile and round-robin counters kept as the JobExecutor keeps them (ModelScheduler,
 * PlacementState). Only the maths is replaced: a step's duration comes from the model card
 * (cost-model.ts: engine time plus the card's per-step and per-token serving costs; a request
 * reaches placement `admissionMs` after it arrives and ends `finishOverheadMs` after its
 * last step; after the step of its first token (more to come) its instance's next step waits
 * `firstTokenOverheadMs`; with `pathSharesThread` one thread runs that path work and every
 * instance's steps, in turn, and a request's cost is the card's for the time the thread sat idle before it), a PD
 * handoff's from the card's fabric figures, and every sampled token is a fixed non-EOS id, with
 * `ignoreEos` and `maxTokens` = the request's output length. Placement does not see that length:
 * it gets the budget of a chat request without `max_tokens` (the rest of the context), as the
 * traces record no `max_tokens`.
 *
 * Groups: `numInstances` colocated instances (deployment "sim"), and with `pd` a PD deployment
 * ("sim-pd") of prefill and decode instances. A PD request runs as the Npus run it: the prefill
 * instance computes the prompt and the first token (that is the TTFT) with its KV held, exports
 * it and frees its blocks; after `transferMs` the decode instance imports it with
 * `addPrefilled` (or, without a free slot or blocks, queues it and retries whenever one of its
 * steps ends) and decodes the rest.
 *
 * Event order at one instant: events run in the order they were queued (events.ts). An arrival
 * is placed at once; an idle instance that receives work starts a step at that instant. A step
 * is planned (`schedule()`) when it starts and applied (`update()`) when it ends, as the Npu's
 * loop does, so a request placed during a step sees that step's planned state (on a shared
 * thread a step is planned when its instance is ready and runs once the thread is free).
 *
 * JobExecutor parity: the prefix tree keys prompts as the JobExecutor does (one key per
 * `prefixIndexTokens`, PREFIX_INDEX_TOKENS there) and learns a prompt on its colocated or
 * prefill instance when that instance first schedules it (the task "running" report); the
 * predictor observes every finished request; each sequence carries the predicted output length
 * (`expectedOutputTokens`).
 * Reports reach the JobExecutor instantly here (the real system sees them after an RPC).
 *
 * A request that can never run on an instance (prompt + output over the context, or more KV
 * blocks than the instance has, or an empty prompt) is failed at arrival, never dropped. With
 * `stopAtMs` the run ends at that time with work left. Pure.
 */
import type { StepPlan, StepResult } from "../engine/executor.ts";
import { GREEDY, newSequence, type Sequence } from "../engine/sequence.ts";
import { hashUniform } from "../random.ts";
import { OutputLengthPredictor } from "../serving/pd-profile.ts";
import {
  DEFAULT_MAX_PREFIX_NODES,
  DEFAULT_PREFIX_INDEX_TOKENS,
  PrefixTree,
  prefixStrideBlocks,
  promptBlockKeys,
} from "../serving/prefix-tree.ts";
import {
  DEFAULT_SCHEDULE,
  type DeploymentState,
  type RrCounters,
  scheduleRequest,
} from "../serving/scheduling.ts";
import { admissionMs, servedStepMs, stepFeatures } from "./cost-model.ts";
import { EventQueue } from "./events.ts";
import {
  instanceState,
  newInstance,
  SIM_TOKEN_ID,
  type SimInstance,
  type SimRequest,
  transferMs,
  unservable,
} from "./instance.ts";
import type { RequestOutcome, SimOptions, SimResult } from "./types.ts";

export type { SimRequest } from "./instance.ts";
export type { PlacementRecord, RequestOutcome, SimOptions, SimResult } from "./types.ts";

type SimEvent =
  | { kind: "admit"; index: number }
  | { kind: "arrival"; index: number }
  | { kind: "step-end"; instance: SimInstance; plan: StepPlan }
  | { kind: "kv-ready"; seq: Sequence; decode: SimInstance };

export const SIM_DEPLOYMENT_ID = "sim";
export const SIM_PD_DEPLOYMENT_ID = "sim-pd";

/** Per live request: its index, block keys (until learnt), PD decode instance, cached tokens. */
interface Live {
  index: number;
  blockKeys: string[] | null;
  decode: SimInstance | null;
  predicted: number;
}

export function simulate(requests: readonly SimRequest[], opts: SimOptions): SimResult {
  const { card } = opts;
  const make = (n: number, prefix: string, role: SimInstance["role"]) =>
    Array.from({ length: n }, (_, i) => newInstance(card, `${prefix}${i}`, role));
  const colocated = make(opts.numInstances, "i", "colocated");
  const prefill = make(opts.pd?.prefill ?? 0, "p", "prefill");
  const decode = make(opts.pd?.decode ?? 0, "d", "decode");
  const instances = [...colocated, ...prefill, ...decode];
  const byId = new Map(instances.map((s) => [s.id, s]));
  const tree = new PrefixTree(opts.prefixTreeNodes ?? DEFAULT_MAX_PREFIX_NODES);
  const stride = prefixStrideBlocks(
    opts.prefixIndexTokens ?? DEFAULT_PREFIX_INDEX_TOKENS,
    card.blockSize,
  );
  const predictor = new OutputLengthPredictor(card.name);
  const scheduleOptions = {
    ...DEFAULT_SCHEDULE,
    interference: opts.interference ?? DEFAULT_SCHEDULE.interference,
  };
  let counters: RrCounters = {};
  const outcomes: RequestOutcome[] = requests.map((r) => ({
    id: r.id,
    arrivalMs: r.arrivalMs,
    instanceId: null,
    decodeInstanceId: null,
    numPromptTokens: r.promptIds.length,
    numOutputTokens: 0,
    numCachedTokens: 0,
    firstTokenMs: null,
    finishMs: null,
    failure: null,
  }));
  const live = new Map<string, Live>();
  const queue = new EventQueue<SimEvent>();
  // the request path's fixed cost: a request reaches placement and its instance that much later
  const finishOverheadMs = card.finishOverheadMs ?? 0;
  const firstTokenOverheadMs = card.firstTokenOverheadMs ?? 0;
  const shared = card.pathSharesThread === true;
  // on the shared thread a request's path cost depends on how long the thread sat idle: its
  // admission is priced when it arrives (`admit`); otherwise it is fixed
  requests.forEach((r, index) => {
    if (shared) queue.push(r.arrivalMs, { kind: "admit", index });
    else
      queue.push(r.arrivalMs + admissionMs(card, r.promptIds.length), { kind: "arrival", index });
  });
  /**
   * Shared thread: when it is through with the work given it so far (steps, admissions,
   * finishes). A step starts once it is free, so the instances' steps take turns on it.
   */
  let threadFreeAt = Number.NEGATIVE_INFINITY;
  let numSteps = 0;
  let numPreemptions = 0;
  let numDeferredImports = 0;

  const deployments = (): DeploymentState[] => {
    const out: DeploymentState[] = [];
    const policy = opts.policy;
    if (colocated.length > 0) {
      const states = colocated.map(instanceState);
      out.push({ deploymentId: SIM_DEPLOYMENT_ID, mode: "colocated", policy, instances: states });
    }
    if (opts.pd) {
      const states = [...prefill, ...decode].map(instanceState);
      out.push({ deploymentId: SIM_PD_DEPLOYMENT_ID, mode: "pd", policy, instances: states });
    }
    return out;
  };

  /** `delayMs`: path work of this instance's last step that its next step waits for. */
  const startStep = (inst: SimInstance, now: number, delayMs = 0): void => {
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
      if (l?.blockKeys && inst.role !== "decode") {
        tree.insert(inst.id, l.blockKeys, now);
        l.blockKeys = null;
      }
    }
    const ms = servedStepMs(card, stepFeatures(plan));
    const begin = shared ? Math.max(now, threadFreeAt) : now + delayMs;
    if (shared) threadFreeAt = begin + ms;
    inst.busyMs += ms;
    queue.push(begin + ms, { kind: "step-end", instance: inst, plan });
  };

  /** Path work on the shared thread: every instance's next step waits for it. */
  const stall = (ms: number, now: number): void => {
    threadFreeAt = Math.max(threadFreeAt, now) + ms;
  };

  /**
   * A request reaches the shared thread: its admission, priced by the thread's idle time, plus its
   * draw from the card's measured jitter.
   */
  const admit = (index: number, now: number): void => {
    const idleMs = Math.max(0, now - threadFreeAt);
    const u = hashUniform(opts.seed ?? 1, index, 0);
    const ms = admissionMs(card, (requests[index] as SimRequest).promptIds.length, idleMs, u);
    stall(ms, now);
    queue.push(now + ms, { kind: "arrival", index });
  };

  const wake = (inst: SimInstance, now: number): void => {
    if (!inst.busy) startStep(inst, now);
  };

  const arrive = (index: number, now: number): void => {
    const req = requests[index] as SimRequest;
    const out = outcomes[index] as RequestOutcome;
    const why = unservable(card, req);
    if (why) {
      out.failure = why;
      return;
    }
    const blockKeys = promptBlockKeys(req.promptIds, card.blockSize, { strideBlocks: stride });
    const states = deployments();
    const matches = tree.match(blockKeys);
    // what placement sees: a chat request without max_tokens (the traces record none), whose
    // budget is the rest of the context (shared/serving/task.ts); the engine still stops the
    // sequence at the trace's output length
    const clientMaxTokens = card.maxModelLen - req.promptIds.length;
    const predicted = predictor.predict(req.promptIds.length, clientMaxTokens);
    const before = counters;
    const result = scheduleRequest(
      {
        deployments: states,
        blockKeys,
        blockSize: card.blockSize * stride,
        numPromptTokens: req.promptIds.length,
        maxTokens: clientMaxTokens,
        prefixTree: tree,
        predictor,
        profile: opts.profile ?? null,
        counters,
      },
      scheduleOptions,
    );
    const d = result?.decision;
    const inst = byId.get(d?.instanceId ?? d?.prefillInstanceId ?? "");
    const dec = d?.mode === "pd" ? byId.get(d.decodeInstanceId ?? "") : undefined;
    if (!result || !d || !inst || (d.mode === "pd" && !dec)) {
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
      decision: d,
    });
    out.instanceId = inst.id;
    out.decodeInstanceId = dec?.id ?? null;
    // a PD prefill computes the prompt and the first token only, and keeps the KV for export
    const pd = dec !== undefined && req.outputTokens > 1;
    const seq = newSequence(req.id, req.promptIds, {
      ...GREEDY,
      maxTokens: pd ? 1 : req.outputTokens,
      ignoreEos: true,
    });
    seq.holdKv = pd;
    seq.expectedOutputTokens = pd ? 1 : predicted;
    live.set(req.id, { index, blockKeys, decode: pd ? (dec ?? null) : null, predicted });
    inst.scheduler.add(seq);
    wake(inst, now);
  };

  /** Imports a handed-off sequence into its decode instance, or queues it there. */
  const importKv = (seq: Sequence, dec: SimInstance, now: number): void => {
    if (dec.scheduler.addPrefilled(seq)) wake(dec, now);
    else {
      numDeferredImports++;
      dec.pendingImports.push(seq);
    }
  };

  const retryImports = (dec: SimInstance): void => {
    while (dec.pendingImports.length > 0) {
      if (!dec.scheduler.addPrefilled(dec.pendingImports[0] as Sequence)) return;
      dec.pendingImports.shift();
    }
  };

  const endStep = (inst: SimInstance, plan: StepPlan, now: number): void => {
    const result: StepResult = {
      sampled: plan.seqs.map((s) =>
        s.sample ? { tokenId: SIM_TOKEN_ID, logprob: Number.NaN, topLogprobs: [] } : null,
      ),
    };
    let pathMs = 0;
    for (const u of inst.scheduler.update(plan, result)) {
      const l = live.get(u.seq.seqId);
      if (!l) continue;
      const out = outcomes[l.index] as RequestOutcome;
      if (u.sampled && out.firstTokenMs === null) {
        out.firstTokenMs = now;
        // its first progress report; a request that also ends here reports once, as finished
        if (!u.finished) pathMs += firstTokenOverheadMs;
      }
      if (!u.finished) continue;
      if (l.decode && inst.role === "prefill") handOff(inst, u.seq, l, out, now);
      else finish(u.seq, out, now, inst.role !== "decode");
    }
    if (inst.role === "decode") retryImports(inst);
    if (shared && pathMs > 0) stall(pathMs, now);
    startStep(inst, now, pathMs);
  };

  /** The prefill is done: export (free the held blocks) and start the transfer. */
  const handOff = (inst: SimInstance, seq: Sequence, l: Live, out: RequestOutcome, now: number) => {
    const req = requests[l.index] as SimRequest;
    out.numCachedTokens = seq.numCachedTokens;
    inst.scheduler.releaseHeld(seq.seqId);
    const next = newSequence(seq.seqId, req.promptIds, {
      ...GREEDY,
      maxTokens: req.outputTokens,
      ignoreEos: true,
    });
    next.tokenIds.push(SIM_TOKEN_ID);
    next.expectedOutputTokens = l.predicted;
    const dec = l.decode as SimInstance;
    queue.push(now + transferMs(card, req.promptIds.length), {
      kind: "kv-ready",
      seq: next,
      decode: dec,
    });
  };

  /** `computedPrompt`: the sequence computed its prompt here (not a PD decode side). */
  const finish = (seq: Sequence, out: RequestOutcome, now: number, computedPrompt: boolean) => {
    live.delete(seq.seqId);
    out.finishMs = now + finishOverheadMs;
    if (shared) stall(finishOverheadMs, now);
    out.numOutputTokens = seq.tokenIds.length - seq.numPromptTokens;
    if (computedPrompt) out.numCachedTokens = seq.numCachedTokens;
    predictor.observe(seq.numPromptTokens, out.numOutputTokens);
  };

  const stopAtMs = opts.stopAtMs ?? Number.POSITIVE_INFINITY;
  let stopped = false;
  for (let e = queue.pop(); e; e = queue.pop()) {
    if (e.at > stopAtMs) {
      stopped = true;
      break;
    }
    const ev = e.event;
    if (ev.kind === "admit") admit(ev.index, e.at);
    else if (ev.kind === "arrival") arrive(ev.index, e.at);
    else if (ev.kind === "step-end") endStep(ev.instance, ev.plan, e.at);
    else importKv(ev.seq, ev.decode, e.at);
  }
  for (const s of stopped ? [] : instances) {
    const left = s.scheduler.numUnfinished + s.pendingImports.length;
    if (left > 0) throw new Error(`instance ${s.id} ended with work left`);
  }
  return {
    outcomes,
    numSteps,
    numPreemptions,
    busyMs: instances.map((s) => s.busyMs),
    numDeferredImports,
  };
}
