/**
 * WeightCache: the staging tier between the R2 model registry and instance memory (DeepFlow's
 * DRAM pre-loading). One object per model generation (`weightCacheName`) copies the model's GGUF
 * from R2 into its own storage in 1 MiB chunks (a storage value holds at most about 2 MB), ahead
 * of a scale-up; loading Npus read the chunks from here instead of from R2.
 */
import { DurableObject } from "cloudflare:workers";
import { Logger, parseLogLevel } from "../shared/log.ts";
import { WEIGHT_CHUNK_BYTES } from "../shared/serving/scale-plan.ts";
import type { Env } from "./env.ts";

export interface StagedMeta {
  r2Key: string;
  sizeBytes: number;
  numChunks: number;
  stagedAt: number;
}

export class WeightCache extends DurableObject<Env> {
  private readonly log: Logger;
  #staging: Promise<StagedMeta | null> | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.log = new Logger(
      { do: "WeightCache", name: ctx.id.name ?? null },
      parseLogLevel(env.LOG_LEVEL),
    );
  }

  /** What is staged here, or null. */
  async meta(): Promise<StagedMeta | null> {
    return (await this.ctx.storage.get<StagedMeta>("meta")) ?? null;
  }

  /**
   * Copies `r2Key` from R2 into storage unless it is staged already; concurrent callers share
   * one copy. Null when R2 has no such object.
   */
  async stage(q: { r2Key: string }): Promise<StagedMeta | null> {
    const have = await this.meta();
    if (have?.r2Key === q.r2Key) return have;
    this.#staging ??= this.#copy(q.r2Key).finally(() => {
      this.#staging = null;
    });
    return this.#staging;
  }

  async #copy(r2Key: string): Promise<StagedMeta | null> {
    const t0 = Date.now();
    const obj = await this.env.MODELS.get(r2Key);
    if (!obj) return null;
    const bytes = new Uint8Array(await obj.arrayBuffer());
    const numChunks = Math.ceil(bytes.byteLength / WEIGHT_CHUNK_BYTES);
    await this.ctx.storage.deleteAll();
    for (let i = 0; i < numChunks; i++) {
      const chunk = bytes.slice(i * WEIGHT_CHUNK_BYTES, (i + 1) * WEIGHT_CHUNK_BYTES);
      await this.ctx.storage.put(`chunk/${i}`, chunk);
    }
    const meta: StagedMeta = {
      r2Key,
      sizeBytes: bytes.byteLength,
      numChunks,
      stagedAt: Date.now(),
    };
    await this.ctx.storage.put("meta", meta);
    this.log.info("weights.staged", {
      r2Key,
      sizeBytes: meta.sizeBytes,
      durationMs: Date.now() - t0,
    });
    return meta;
  }

  /** One staged chunk, or null when it is not here. */
  async chunk(q: { index: number }): Promise<Uint8Array | null> {
    return (await this.ctx.storage.get<Uint8Array>(`chunk/${q.index}`)) ?? null;
  }
}
