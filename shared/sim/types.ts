/**
 * What a simulation takes and gives back (cluster.ts runs it): the cluster's shape and policy,
 * what each placement saw, and each request's outcome. Types only.
 */
import type { PdProfile } from "../serving/pd-profile.ts";
import type { DeploymentState, RrCounters, ScheduleDecision } from "../serving/scheduling.ts";
import type { SchedulerPolicy } from "../types/deployments.ts";
import type { ModelCard } from "./cost-model.ts";

export interface SimOptions {
  card: ModelCard;
  /** Colocated instances (0 with `pd` for a PD-only cluster). */
  numInstances: number;
  /** A PD deployment of this many prefill and decode instances besides the colocated ones. */
  pd?: { prefill: number; decode: number };
  /** The model's colocated-vs-PD heatmap for the PD-aware step (null: none profiled). */
  profile?: PdProfile | null;
  policy: SchedulerPolicy;
  /** The prefix tree's node budget (default: the JobExecutor's, `DEFAULT_MAX_PREFIX_NODES`). */
  prefixTreeNodes?: number;
  /**
   * Prompt tokens per prefix-tree key, a multiple of the card's block size (default: the
   * JobExecutor's, `DEFAULT_PREFIX_INDEX_TOKENS`; the card's block size keys every block).
   */
  prefixIndexTokens?: number;
  /** `placementCost`'s interference weight (default `DEFAULT_INTERFERENCE`; 0: without it). */
  interference?: number;
  /**
   * Stop the clock here (ms): events after it are not run, and requests still in flight keep
   * `finishMs` null (a load probe needs only the window it measures, not the drain).
   */
  stopAtMs?: number;
  /** Seeds each request's draw from the card's `requestJitterMs` (default 1). */
  seed?: number;
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
  /** The colocated or prefill instance. */
  instanceId: string | null;
  /** The decode instance of a PD request. */
  decodeInstanceId: string | null;
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
  /** Per instance, colocated then prefill then decode: the virtual ms it spent running steps. */
  busyMs: number[];
  /** PD handoffs that waited for a decode slot or blocks. */
  numDeferredImports: number;
}
