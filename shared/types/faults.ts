/** Fault injection for tests and drills (POST /api/faults, on only with FAULT_INJECTION). */

/** Which kind of Durable Object a fault hits. */
export const FAULT_TARGETS = ["npu", "expert", "job_executor", "cluster_manager"] as const;
export type FaultTarget = (typeof FAULT_TARGETS)[number];

/**
 * - `throw`: an Npu's next engine step throws; an Expert's next (layer, step) serve does; a
 *   JobExecutor's or ClusterManager's next call does;
 * - `hang`: an Npu's engine loop, or an Expert's step handling, awaits something that never
 *   resolves, while the object still answers calls (the control-plane objects have no loop);
 * - `drop_state`: the object is reset (`ctx.abort`), as production resets an isolate past its
 *   memory limit: its in-memory state is gone and the next call starts a fresh one.
 */
export const FAULT_KINDS = ["throw", "hang", "drop_state"] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];
