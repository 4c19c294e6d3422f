/**
 * The JobExecutor's state for one model's current weights, and the host side of DeepFlow's
 * Algorithm 1: the model's tokenizer and chat template (every prompt is tokenised here, once),
 * the prefix tree of which instance holds which blocks, the output-length predictor, round-robin
 * counters and the PD profile. The policy itself is pure (shared/serving/scheduling.ts); this
 * class gathers its inputs and keeps its state, which the JobExecutor snapshots to storage.
 */

import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { parseGguf } from "../shared/model/gguf.ts";
import { Tokenizer } from "../shared/model/tokenizer.ts";
import type { GenerateInput } from "../shared/protocol/messages.ts";
import {
  OutputLengthPredictor,
  type OutputLengthPredictorJson,
  type PdProfile,
} from "../shared/serving/pd-profile.ts";
import { PrefixTree, type PrefixTreeJson, promptBlockKeys } from "../shared/serving/prefix-tree.ts";
import {
  type DeploymentState,
  type RrCounters,
  type ScheduleResult,
  scheduleRequest,
} from "../shared/serving/scheduling.ts";
import { type PreparedPrompts, preparePrompts } from "../shared/serving/task.ts";
import type { ModelRecord } from "../shared/types/deployments.ts";
import { type ChatRenderer, createChatRenderer } from "./chat-template.ts";

/** GGUF metadata (vocabulary included) sits at the start of the file; read at most this much. */
const HEADER_BYTES = 8 * 2 ** 20;

export interface SchedulerSnapshot {
  generation: number;
  tree: PrefixTreeJson;
  predictor: OutputLengthPredictorJson;
  counters: RrCounters;
}

export class ModelScheduler {
  private tokenizer: Tokenizer | null = null;
  private chat: ChatRenderer | null = null;
  private tree = new PrefixTree();
  private predictor: OutputLengthPredictor;
  private counters: RrCounters = {};
  profile: PdProfile | null = null;
  /** Changed since the last snapshot. */
  dirty = false;

  constructor(
    readonly model: string,
    readonly generation: number,
    private readonly blockSize: number,
  ) {
    this.predictor = new OutputLengthPredictor(model);
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
  async ensureTokenizer(models: R2Bucket, m: ModelRecord): Promise<void> {
    if (this.tokenizer) return;
    const obj = await models.get(m.r2Key, { range: { offset: 0, length: HEADER_BYTES } });
    if (!obj) return;
    const file = parseGguf(new Uint8Array(await obj.arrayBuffer()), { headerOnly: true });
    const tok = Tokenizer.fromGguf(file.metadata);
    this.tokenizer = tok;
    this.chat = createChatRenderer(
      file.metadata.get("tokenizer.chat_template") as string | undefined,
      tok,
    );
  }

  /** Tokenises a job's prompts and resolves its max tokens against the context (400s as values). */
  prepare(
    input: GenerateInput,
    maxTokens: number | null,
    maxModelLen: number,
  ): Result<PreparedPrompts> {
    const { tokenizer, chat } = this;
    if (!tokenizer || !chat) {
      return failure(errorInfo("internal", `the weights of model ${this.model} are unreadable`));
    }
    return preparePrompts(input, maxTokens, tokenizer, maxModelLen, (m) => chat.render(m));
  }

  /** The prompt's full-block keys under a cache salt (as the engine keys its KV blocks). */
  blockKeys(promptIds: readonly number[], cacheSalt: string): string[] {
    return promptBlockKeys(promptIds, this.blockSize, { cacheSalt });
  }

  /** Output tokens expected for a prompt (the predictor's median of similar requests). */
  expectedOutputTokens(numPromptTokens: number, maxTokens: number): number {
    return this.predictor.predict(numPromptTokens, maxTokens);
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
      numPromptTokens,
      maxTokens,
      prefixTree: this.tree,
      predictor: this.predictor,
      profile: this.profile,
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
