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
  /** The reserve every warm pooled Npu has (a refill brings the older ones up to reserveBytes). */
  #pooledReserve = 0;

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

  /**
   * Tops the pool up to POOL_SIZE in the background (one fill at a time), and first brings the
   * warm Npus reserved before a larger arena was asked for up to it (`warming` meanwhile).
   */
  refill(): Promise<void> {
    this.#filling ??= this.#fill().finally(() => {
      this.#filling = null;
    });
    this.host.ctx.waitUntil(this.#filling);
    return this.#filling;
  }

  async #fill(): Promise<void> {
    const reserve = this.reserveBytes;
    if (reserve > this.#pooledReserve) {
      const warm = this.list().filter((x) => x.state === "warm");
      for (const { id } of warm)
        this.#sql.exec("UPDATE pool SET state = 'warming' WHERE id = ?", id);
      await Promise.all(warm.map(({ id }) => this.#preload(id, reserve)));
      this.#pooledReserve = reserve;
    }
    const size = getConfig(this.host.env).poolSize;
    const missing = size - this.count();
    if (missing <= 0) return;
    const ids = Array.from({ length: missing }, () => poolInstanceId(this.nextIndex()));
    for (const id of ids) this.#sql.exec("INSERT INTO pool (id, state) VALUES (?, 'warming')", id);
    await Promise.all(ids.map((id) => this.#preload(id, reserve)));
  }

  /** Pre-loads a pooled Npu with `reserveBytes` (committed); it is warm after, or leaves the pool. */
  async #preload(id: string, reserveBytes: number): Promise<void> {
    try {
      await this.host.env.NPU.getByName(npuName(id)).preload({ reserveBytes, pooled: true });
      this.#sql.exec("UPDATE pool SET state = 'warm' WHERE id = ?", id);
    } catch (e) {
      this.#sql.exec("DELETE FROM pool WHERE id = ?", id);
      this.host.log.warn("pool.preload_failed", { instanceId: id, ...errorFields(e) });
    }
  }
}
