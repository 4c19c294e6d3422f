/**
 * Fault injection for the control-plane objects (JobExecutor, ClusterManager): `throw` makes the
 * object's next guarded call throw once, `drop_state` resets the object (`ctx.abort`), as
 * production does past the memory limit. They have no engine loop, so `hang` is refused (the
 * Npu's loop faults are in engine-loop.ts). An Expert's step handling takes all three (`hang`:
 * its `gate` never settles again). Everything is refused unless FAULT_INJECTION is on.
 */
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import type { Logger } from "../shared/log.ts";
import type { FaultKind } from "../shared/types/faults.ts";
import { type Env, getConfig } from "./env.ts";

/** Refusal of a fault while FAULT_INJECTION is off, or null. */
export function faultsOff(env: Env): Result<null> | null {
  return getConfig(env).faultInjection
    ? null
    : failure(errorInfo("permission", "fault injection is off (FAULT_INJECTION)"));
}

export class FaultSwitch {
  #throwNext = false;
  #hung = false;

  /** `canHang`: the object has step handling that `gate` guards (an Expert). */
  constructor(
    private readonly ctx: DurableObjectState,
    private readonly env: Env,
    private readonly log: Logger,
    private readonly canHang = false,
  ) {}

  inject(fault: FaultKind): Result<null> {
    const off = faultsOff(this.env);
    if (off) return off;
    if (fault === "hang" && !this.canHang) {
      return failure(
        errorInfo("invalid_request", "only an Npu or an Expert has steps to hang", "fault"),
      );
    }
    this.log.warn("fault.injected", { fault });
    if (fault === "drop_state") this.ctx.abort("fault injection: drop_state");
    else if (fault === "hang") this.#hung = true;
    else this.#throwNext = true;
    return { ok: true, value: null };
  }

  /** Throws once after a `throw` fault. */
  check(where: string): void {
    if (!this.#throwNext) return;
    this.#throwNext = false;
    throw new Error(`fault injection: ${where} threw`);
  }

  /** Awaited before each guarded step: never settles after `hang`, else `check`. */
  async gate(where: string): Promise<void> {
    if (this.#hung) await new Promise<never>(() => {});
    this.check(where);
  }
}
