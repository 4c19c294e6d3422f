/**
 * NpuRecovery: the Npu's side of the JobExecutor's watchdog (shared/serving/watchdog.ts) and of
 * fault drills. health() reports the engine loop's progress counter, whether it has work and the
 * tasks held here; recover() handles a hung loop (every task ends with an error event, the loop
 * is abandoned and the engine replaced); injectFault() applies a drill's fault, refused unless
 * FAULT_INJECTION is on.
 */
import type { Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import type { NpuHealth } from "../shared/serving/watchdog.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import type { ContextPins } from "./context-pins.ts";
import type { EngineLoop } from "./engine-loop.ts";
import type { Env } from "./env.ts";
import { faultsOff } from "./faults.ts";
import type { KvHandoff } from "./kv-handoff.ts";
import type { NpuAttention } from "./npu-attention.ts";
import type { ModelSlot } from "./npu-loader.ts";
import type { TaskAdmission } from "./task-admission.ts";
import type { TaskStreams } from "./task-streams.ts";

export interface RecoveryHost {
  env: Env;
  log: Logger;
  /** Drops this Npu's in-memory state (the drop_state fault). */
  abort(reason: string): void;
  slot: ModelSlot;
  loop: EngineLoop;
  streams: TaskStreams;
  handoff: KvHandoff;
  pins: ContextPins;
  admission: TaskAdmission;
  attention: NpuAttention;
}

export class NpuRecovery {
  constructor(private readonly host: RecoveryHost) {}

  /** The engine loop's progress counter, whether it has work, and the tasks held here. */
  async health(): Promise<NpuHealth> {
    const h = this.host;
    // a moe-attention leader holds its group's tasks: it placed some on its other ranks
    const others = await h.attention.otherTaskIds();
    return {
      numSteps: h.loop.numSteps,
      hasWork: h.slot.current?.instance.engine.hasWork() ?? false,
      taskIds: [...h.streams.ids(), ...h.admission.starting, ...others],
    };
  }

  /**
   * The watchdog found the loop hung: every task here ends with an error event, the loop is
   * abandoned and the engine replaced (its KV blocks and pins go with it; the next task loads a
   * fresh one).
   */
  recover(q: { reason: string }): { numTasksFailed: number } {
    const h = this.host;
    const numTasksFailed = h.streams.size;
    h.streams.failAll(q.reason);
    h.handoff.failAll();
    h.loop.reset();
    h.pins.clear();
    h.slot.drop();
    h.log.warn("npu.recovered", { reason: q.reason, numTasksFailed });
    return { numTasksFailed };
  }

  /** A drill's fault (POST /api/faults); refused unless FAULT_INJECTION is on. */
  injectFault(q: { fault: FaultKind }): Result<null> {
    const off = faultsOff(this.host.env);
    if (off) return off;
    this.host.log.warn("fault.injected", { fault: q.fault });
    if (q.fault === "drop_state") this.host.abort("fault injection: drop_state");
    else this.host.loop.inject(q.fault);
    return { ok: true, value: null };
  }
}
