/**
 * The JobExecutor's scheduling state for one model, and the host side of DeepFlow's Algorithm 1:
 * the model's tokenizer (to key the prompt's KV blocks), the prefix tree of which instance holds
 * which blocks, the output-length predictor, round-robin counters and the PD profile. The policy
 * itself is pure (shared/serving/scheduling.ts); this class gathers its inputs and keeps its
 * state, which the JobExecutor snapshots to storage.
 */

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
import { tokenizePrompts } from "../shared/serving/task.ts";
import { type ChatRenderer, createChatRenderer } from "./chat-template.ts";
import type { ModelRecord } from "./cluster-manager.ts";

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

  /**
   * The prompt's token ids as the Npu will see them (first prompt only; used for locality and
   * length), or [] when they cannot be computed here (the Npu reports real errors).
   */
  promptIds(input: GenerateInput): number[] {
    const { tokenizer, chat } = this;
    if (!tokenizer || !chat) return [];
    const r = tokenizePrompts(input, tokenizer, (m) => chat.render(m));
    return r.ok ? (r.value[0] ?? []) : [];
  }

  /** Runs Algorithm 1 and records the prompt's blocks on the chosen instance. */
  place(
    deployments: DeploymentState[],
    promptIds: number[],
    maxTokens: number,
    now: number,
  ): ScheduleResult | null {
    const blockKeys = promptBlockKeys(promptIds, this.blockSize);
    const result = scheduleRequest({
      deployments,
      blockKeys,
      numPromptTokens: promptIds.length,
      maxTokens,
      prefixTree: this.tree,
      predictor: this.predictor,
      profile: this.profile,
      counters: this.counters,
    });
    if (!result) return null;
    this.counters = result.counters;
    const d = result.decision;
    const holder = d.instanceId ?? d.prefillInstanceId;
    if (holder && blockKeys.length > 0) this.tree.insert(holder, blockKeys, now);
    this.dirty = true;
    return result;
  }

  observe(numPromptTokens: number, numOutputTokens: number): void {
    this.predictor.observe(numPromptTokens, numOutputTokens);
    this.dirty = true;
  }
}
