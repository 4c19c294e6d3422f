/**
 * One simulated instance and the facts the cluster loop needs about it: a real `Scheduler` over
 * a real `KvBlockManager` shaped by the model card, its role (colocated, or prefill / decode in a
 * PD group), the busy flag and busy time, and PD handoffs waiting for its KV blocks. Also the
 * request type, what can never run on an instance, and the KV transfer time of a PD handoff.
 * Pure.
 */
import { KvBlockManager } from "../engine/kv-block-manager.ts";
import { Scheduler } from "../engine/scheduler.ts";
import { outstandingTokens, type Sequence } from "../engine/sequence.ts";
import type { InstanceState } from "../serving/scheduling.ts";
import type { InstanceRole } from "../types/records.ts";
import type { ModelCard } from "./cost-model.ts";

/** The token every simulated step samples (any id that is not EOS). */
export const SIM_TOKEN_ID = 3;
export const SIM_EOS_ID = 2;

export interface SimRequest {
  id: string;
  arrivalMs: number;
  promptIds: readonly number[];
  outputTokens: number;
}

export interface SimInstance {
  id: string;
  role: InstanceRole;
  scheduler: Scheduler;
  busy: boolean;
  busyMs: number;
  /** Decode role: prefilled sequences whose KV arrived but found no free slot or blocks, FIFO. */
  pendingImports: Sequence[];
}

/** Number of KV blocks an instance of `card` has. */
export function numKvBlocks(card: ModelCard): number {
  return Math.floor(card.kvCapacityTokens / card.blockSize);
}

export function newInstance(card: ModelCard, id: string, role: InstanceRole): SimInstance {
  return {
    id,
    role,
    busy: false,
    busyMs: 0,
    pendingImports: [],
    scheduler: new Scheduler(
      {
        maxNumSeqs: card.maxNumSeqs,
        maxNumBatchedTokens: card.maxNumBatchedTokens,
        maxModelLen: card.maxModelLen,
        eosIds: [SIM_EOS_ID],
      },
      new KvBlockManager(numKvBlocks(card), card.blockSize),
    ),
  };
}

/** What the instance reports to placement (Npu.stats): its scheduler state and pending imports. */
export function instanceState(s: SimInstance): InstanceState {
  const sch = s.scheduler;
  return {
    instanceId: s.id,
    role: s.role,
    numRunning: sch.running.length,
    numWaiting: sch.waiting.length + s.pendingImports.length,
    numFreeBlocks: sch.blocks.numFreeBlocks,
    numOutstandingTokens:
      outstandingTokens(sch.running) +
      outstandingTokens(sch.waiting) +
      outstandingTokens(s.pendingImports),
  };
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

/**
 * ms to move a prompt's KV from a prefill to a decode instance: `kvBytesPerToken` bytes per
 * prompt token over a fabric of `fabricGBps` (1e9 bytes per second), plus `fabricLatencyMs`.
 * @throws Error when the card lacks the fabric figures (a PD simulation needs them).
 */
export function transferMs(card: ModelCard, numPromptTokens: number): number {
  if (card.kvBytesPerToken === undefined || card.fabricGBps === undefined) {
    throw new Error(`card ${card.name} has no kvBytesPerToken / fabricGBps for PD handoffs`);
  }
  const bytes = numPromptTokens * card.kvBytesPerToken;
  return (card.fabricLatencyMs ?? 0) + bytes / (card.fabricGBps * 1e6);
}
