/**
 * The pre-warmed pool (DeepFlow's pre-warmed TEs): POOL_SIZE Npus whose runtime is up (wasm
 * instantiated, arena reserved and its pages committed) and that are bound to no model. A
 * scale-up leases one; a drained instance is unbound (memory reset) and comes back while the pool
 * has room; refills run in the background, after the loads of the scale-up that leased
 * (instance-pool.ts). Each pooled Npu keeps itself resident with its alarm (npu-lifecycle.ts).
 */
import { errorFields, type Logger } from "../shared/log.ts";
import { npuName, poolInstanceId } from "../shared/protocol/names.ts";
import { type Env, getConfig } from "./env.ts";

export class WarmPool {
  #filling: Promise<void> | null = null;
  /** Largest arena a load asked for: what pooled Npus reserve. */
  reserveBytes = 0;

  constructor(
    private readonly host: { env: Env; ctx: DurableObjectState; log: Logger },
    private readonly nextIndex: () => number,
  ) {
    host.ctx.storage.sql.exec(
      "CREATE TABLE IF NOT EXISTS pool (id TEXT PRIMARY KEY, state TEXT NOT NULL)",
    );
  }

  get #sql() {
    return this.host.ctx.storage.sql;
  }

  /** Unbinds an instance's Npu; with `rejoin` it comes back to the pool if the pool has room. */
  async giveBack(id: string, rejoin: boolean): Promise<void> {
    const pooled = rejoin && this.count() < getConfig(this.host.env).poolSize;
    if (pooled) this.#sql.exec("INSERT OR REPLACE INTO pool (id, state) VALUES (?, 'warming')", id);
    await this.host.env.NPU.getByName(npuName(id)).unbind({
      pooled,
      reserveBytes: this.reserveBytes,
    });
    if (pooled) this.#sql.exec("UPDATE pool SET state = 'warm' WHERE id = ?", id);
  }

  /** Npus in the pool, warm or warming. */
  count(): number {
    return this.#sql.exec("SELECT COUNT(*) AS n FROM pool").one().n as number;
  }

  /** Takes a warm pooled Npu's instance id, or null when the pool has none. */
  lease(): string | null {
    const row = this.#sql.exec("SELECT id FROM pool WHERE state = 'warm' LIMIT 1").toArray()[0];
    if (!row) return null;
    this.#sql.exec("DELETE FROM pool WHERE id = ?", row.id);
    return row.id as string;
  }

  /** The pool's instance ids and states. */
  list(): { id: string; state: string }[] {
    return this.#sql
      .exec("SELECT id, state FROM pool ORDER BY id")
      .toArray()
      .map((r) => ({ id: r.id as string, state: r.state as string }));
  }

  /** Tops the pool up to POOL_SIZE in the background (one fill at a time). */
  refill(): Promise<void> {
    this.#filling ??= this.#fill().finally(() => {
      this.#filling = null;
    });
    this.host.ctx.waitUntil(this.#filling);
    return this.#filling;
  }

  async #fill(): Promise<void> {
    const size = getConfig(this.host.env).poolSize;
    const missing = size - this.count();
    if (missing <= 0) return;
    const ids = Array.from({ length: missing }, () => poolInstanceId(this.nextIndex()));
    for (const id of ids) this.#sql.exec("INSERT INTO pool (id, state) VALUES (?, 'warming')", id);
    await Promise.all(
      ids.map(async (id) => {
        try {
          await this.host.env.NPU.getByName(npuName(id)).preload({
            reserveBytes: this.reserveBytes,
            pooled: true,
          });
          this.#sql.exec("UPDATE pool SET state = 'warm' WHERE id = ?", id);
        } catch (e) {
          this.#sql.exec("DELETE FROM pool WHERE id = ?", id);
          this.host.log.warn("pool.preload_failed", { instanceId: id, ...errorFields(e) });
        }
      }),
    );
  }
}
