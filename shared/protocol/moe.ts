/**
 * RPC messages of a moe-attention instance: the group every attention Npu and Expert DO is told
 * at setup (who its peers are and the expert map), and what each reports. Plain data.
 */
import type { ExpertMap } from "../moe/expert-map.ts";
import type { ExpertWatchOptions } from "../serving/expert-watch.ts";

/** Default time an exchange waits for a peer's part before failing the step. */
export const MOE_EXCHANGE_TIMEOUT_MS = 30_000;

export interface MoeGroupSpec {
  /** The instance: attention Npus are npuName(instanceId, a), experts expertName(instanceId, j). */
  instanceId: string;
  model: string;
  r2Key: string;
  numAttention: number;
  numExperts: number;
  /** The current map (rank 0 replaces it on a rebalance). */
  map: ExpertMap;
  timeoutMs: number;
  /** The failover watch's probe interval and thresholds (default DEFAULT_EXPERT_WATCH). */
  watch?: ExpertWatchOptions;
  /** Micro-batches per attention rank (MOE_MICRO_BATCHES): 2 ping-pong; absent means 1. */
  microBatches?: number;
}

/** What an attention rank or expert rank holds after setup (measured). */
export interface MoeRankLoaded {
  role: "attention" | "expert";
  rank: number;
  /** Kernel-memory bytes its weights took, measured around the loads. */
  residentWeightBytes: number;
  /**
   * GGUF bytes it fetched from R2 for its weights, by range reads (an attention rank's count its
   * header reads too; an expert rank's only its tensor ranges).
   */
  weightBytesRead: number;
}
