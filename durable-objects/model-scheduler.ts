/**
 * The JobExecutor's state for one model's current weights, and the host side of DeepFlow's
 * Algorithm 1: the model's tokenizer and chat template (every prompt is tokenised here, once),
 * the prefix tree of which instance holds which blocks, the output-length predictor, round-robin
 * counters and the PD profile. The policy itself is pure (shared/serving/scheduling.ts); this
 * class gathers its inputs and keeps its state, which the JobExecutor snapshots to storage.
 */

import { checkKvCache, resolveKvCache } from "../shared/engine/kv-policy/spec.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { parseGguf } from "../shared/gguf/gguf.ts";
import type {
  ChatMessage,
  ContinuedChoice,
  GenerateInput,
  JobSpec,
  Placement,
  Submitted,
} from "../shared/protocol/messages.ts";
import { PROTOCOL_VERSION } from "../shared/protocol/version.ts";
import { noDeployment } from "../shared/serving/admission.ts";
import { DefaultHeatmap } from "../shared/serving/default-heatmap.ts";
import {
  OutputLengthPredictor,
  type OutputLengthPredictorJson,
  type PdProfile,
} from "../shared/serving/pd-profile.ts";
import { decisionPlacement, pinnedPlacement } from "../shared/serving/placement.ts";
import {
  cacheSaltFor,
  PrefixTree,
  type PrefixTreeJson,
  promptBlockKeys,
} from "../shared/serving/prefix-tree.ts";
import {
  type DeploymentState,
  type RrCounters,
  type ScheduleDecision,
  type ScheduleResult,
  scheduleRequest,
} from "../shared/serving/scheduling.ts";
import { type PreparedPrompts, preparePrompts } from "../shared/serving/task.ts";
import type { CardShape } from "../shared/sim/derive-card.ts";
import { Tokenizer } from "../shared/tokenizer/tokenizer.ts";
import type { DeploymentRecord, ModelRecord } from "../shared/types/deployments.ts";
import { type ChatRenderer, createChatRenderer } from "./chat-template.ts";

/** GGUF metadata (vocabulary included) sits at the start of the file; read at most this much. */
const HEADER_BYTES = 8 * 2 ** 20;

export interface SchedulerSnapshot {
  generation: number;
  tree: PrefixTreeJson;
  predictor: OutputLengthPredictorJson;
  counters: RrCounters;
}

/** What planning a job needs: its spec, its model and the deployments it may use. */
export interface PlanInput {
  spec: JobSpec;
  modelRecord: ModelRecord;
  /** Candidate deployments (one when the request pins it). */
  deployments: DeploymentRecord[];
  /** Place on this instance (a context cache's): no scheduling decision. */
  pinned: { deploymentId: string; instanceId: string } | null;
}

/** A planned job and what the JobExecutor keeps of it until its instances report. */
export interface JobPlan {
  submitted: Submitted;
  /** Algorithm 1's decision (null when the job was pinned to a context cache's instance). */
  decision: ScheduleDecision | null;
  /** The first prompt's block keys, for the prefix tree once the task runs. */
  blockKeys: string[];
  numSeqs: number;
  /** Tokens the job owes: its prompts plus its expected output. */
  outstanding: number;
}

export class ModelScheduler {
  private tokenizer: Tokenizer | null = null;
  private chat: ChatRenderer | null = null;
  private loading: Promise<void> | null = null;
  private tree = new PrefixTree();
  private predictor: OutputLengthPredictor;
  private counters: RrCounters = {};
  profile: PdProfile | null = null;
  /** Used in place of `profile` when it is null (derived from the GGUF header on first need). */
  private readonly defaultHeatmap: DefaultHeatmap;
  /** Changed since the last snapshot. */
  dirty = false;

  constructor(
    readonly model: string,
    readonly generation: number,
    private readonly blockSize: number,
    /** KV blocks per prefix-tree key (PREFIX_INDEX_TOKENS / blockSize). */
    private readonly prefixStrideBlocks: number,
    /** The instance shape the default heatmap's card runs with (the engine's config). */
    shape: CardShape = {},
  ) {
    this.predictor = new OutputLengthPredictor(model);
    this.defaultHeatmap = new DefaultHeatmap(model, shape);
  }

  restore(s: SchedulerSnapshot): void {
    if (s.generation !== this.generation) return; // new weights: nothing cached is valid
    this.tree = PrefixTree.fromJSON(s.tree);
    this.predictor = OutputLengthPredictor.fromJSON(s.predictor);
    this.counters = s.counters;
  }

  snapshot(): SchedulerSnapshot {
    return {
      generation: this.generation,
      tree: this.tree.toJSON(),
      predictor: this.predictor.toJSON(),
      counters: this.counters,
    };
  }

  /** Loads the tokenizer and chat template from the model's GGUF header in R2 (once). */
  ensureTokenizer(models: R2Bucket, m: ModelRecord): Promise<void> {
    if (this.tokenizer) return Promise.resolve();
    // concurrent first requests share one read; a failed read is tried again by the next one
    this.loading ??= (async () => {
      const obj = await models.get(m.r2Key, { range: { offset: 0, length: HEADER_BYTES } });
      if (!obj) return;
      const file = parseGguf(new Uint8Array(await obj.arrayBuffer()), { headerOnly: true });
      const tok = Tokenizer.fromGguf(file.metadata);
      this.defaultHeatmap.readHeader(file, m.sizeBytes);
      this.tokenizer = tok;
      this.chat = createChatRenderer(
        file.metadata.get("tokenizer.chat_template") as string | undefined,
        tok,
      );
    })().finally(() => {
      this.loading = null;
    });
    return this.loading;
  }

  /** Tokenises a job's prompts and resolves its max tokens against the context (400s as values). */
  prepare(
    input: GenerateInput,
    maxTokens: number | null,
    maxModelLen: number,
    continues: readonly ContinuedChoice[] | null = null,
  ): Result<PreparedPrompts> {
    const { tokenizer, chat } = this;
    if (!tokenizer || !chat) {
      const msg = `the weights of model ${this.model} are not in the registry; retry shortly`;
      return failure(errorInfo("overloaded", msg, null, "model_unavailable"));
    }
    const render = (m: readonly ChatMessage[]) => chat.render(m);
    return preparePrompts(input, maxTokens, tokenizer, maxModelLen, render, continues);
  }

  /**
   * The prompt's prefix-tree keys under a cache salt: the engine's chained KV block keys, every
   * `prefixStrideBlocks`-th (one per PREFIX_INDEX_TOKENS tokens).
   */
  blockKeys(promptIds: readonly number[], cacheSalt: string): string[] {
    return promptBlockKeys(promptIds, this.blockSize, {
      cacheSalt,
      strideBlocks: this.prefixStrideBlocks,
    });
  }

  /** Output tokens expected for a prompt (the predictor's median of similar requests). */
  expectedOutputTokens(numPromptTokens: number, maxTokens: number): number {
    return this.predictor.predict(numPromptTokens, maxTokens);
  }

  /**
   * Plans a job for attempt `attempt`: tokenises its prompts once, checks the context, and places
   * it (on `pinned`'s instance, or with Algorithm 1 over `states(numSeqs)`; `decision` null when
   * nothing can serve it, or when pinned). Task ids derive from the job id, role and attempt.
   */
  plan(
    s: PlanInput,
    states: (numSeqs: number) => DeploymentState[],
    attempt: number,
  ): Result<JobPlan> {
    const { spec, modelRecord: m } = s;
    const ctxLen = m.summary.contextLength;
    const prepared = this.prepare(spec.input, spec.maxTokens, ctxLen, spec.continues ?? null);
    if (!prepared.ok) return prepared;
    const p = prepared.value;
    // the request's kv_cache over its deployments' default; checked against the longest prompt
    const kvDefault = s.deployments.find((d) => d.kvCache)?.kvCache ?? null;
    const kvCache = resolveKvCache(spec.kvCache ?? null, kvDefault, this.blockSize);
    const longest = Math.max(...p.prompts.map((ids) => ids.length));
    const kvError = checkKvCache(kvCache, this.blockSize, longest);
    if (kvError) return failure(kvError);
    const numSeqs = p.prompts.length * spec.n;
    const cacheSalt = cacheSaltFor(spec.tenant, spec.cacheSalt);
    const blockKeys = this.blockKeys(p.prompts[0] ?? [], cacheSalt);
    const expected = this.predictor.predict(p.numPromptTokens, p.maxTokens);
    let placement: Placement;
    let decision: ScheduleDecision | null = null;
    if (s.pinned) {
      placement = pinnedPlacement(spec.jobId, attempt, s.pinned);
    } else {
      const result = this.place(states(numSeqs), blockKeys, p.numPromptTokens, p.maxTokens);
      if (!result) return failure(noDeployment(m, s.deployments.length > 0));
      decision = result.decision;
      placement = decisionPlacement(spec.jobId, attempt, decision);
    }
    const task = {
      protocolVersion: PROTOCOL_VERSION,
      requestId: spec.requestId,
      jobId: spec.jobId,
      tenant: spec.tenant,
      model: m.name,
      prompts: p.prompts,
      n: spec.n,
      maxTokens: p.maxTokens,
      expectedOutputTokens: expected,
      stripLeadingSpace: p.stripLeadingSpace,
      sampling: spec.sampling,
      cacheSalt,
      kvCache: kvCache.policy === "dense" ? null : kvCache,
      ...(spec.continues ? { continues: spec.continues } : {}),
    };
    return {
      ok: true,
      value: {
        submitted: { placement, task, r2Key: m.r2Key },
        decision,
        blockKeys,
        numSeqs,
        outstanding: p.numPromptTokens + numSeqs * expected,
      },
    };
  }

  /** Runs Algorithm 1. The prefix tree learns the prompt only once its task is accepted (`learn`). */
  place(
    deployments: DeploymentState[],
    blockKeys: readonly string[],
    numPromptTokens: number,
    maxTokens: number,
  ): ScheduleResult | null {
    const result = scheduleRequest({
      deployments,
      blockKeys,
      blockSize: this.blockSize * this.prefixStrideBlocks,
      numPromptTokens,
      maxTokens,
      prefixTree: this.tree,
      predictor: this.predictor,
      profile: this.profile,
      defaultProfile: this.profile ? null : this.defaultHeatmap.for(deployments),
      counters: this.counters,
    });
    if (!result) return null;
    this.counters = result.counters;
    this.dirty = true;
    return result;
  }

  /** Records that `instanceId` now holds the prompt's blocks (its task was accepted there). */
  learn(instanceId: string, blockKeys: readonly string[], now: number): void {
    if (blockKeys.length === 0) return;
    this.tree.insert(instanceId, blockKeys, now);
    this.dirty = true;
  }

  observe(numPromptTokens: number, numOutputTokens: number): void {
    this.predictor.observe(numPromptTokens, numOutputTokens);
    this.dirty = true;
  }
}
