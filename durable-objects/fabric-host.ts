/**
 * The owner side of the fabric: stores a DO's regions and answers peers' reads. Durable regions
 * live in the owner's SQLite storage in chunks of at most 1 MiB and survive restarts until freed;
 * memory regions live in a Map. Writers bump a region's sequence number; readers may wait for a
 * sequence number. Every operation is counted per kind. A DO embeds one FabricHost and exposes
 * its methods over RPC (see Npu).
 */
import {
  chunkBytes,
  emptyStats,
  type FabricStats,
  joinChunks,
  type RegionKind,
  type RegionMeta,
} from "../shared/fabric/regions.ts";

interface Waiter {
  minSeq: number;
  resolve: (ok: boolean) => void;
}

export interface RegionData {
  meta: RegionMeta;
  bytes: Uint8Array;
}

export class FabricHost {
  private readonly memory = new Map<string, RegionData>();
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly stats: FabricStats = emptyStats();

  constructor(private readonly storage: DurableObjectStorage) {
    storage.sql.exec(`
      CREATE TABLE IF NOT EXISTS fabric_regions (region_id TEXT PRIMARY KEY, kind TEXT NOT NULL,
        seq INTEGER NOT NULL, byte_length INTEGER NOT NULL, num_chunks INTEGER NOT NULL,
        written_at INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS fabric_chunks (region_id TEXT NOT NULL, idx INTEGER NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (region_id, idx));`);
    // durable regions that survived a restart are live again
    for (const r of storage.sql.exec("SELECT byte_length FROM fabric_regions").toArray()) {
      this.stats.durable.liveRegions++;
      this.stats.durable.liveBytes += Number(r.byte_length);
    }
  }

  /** Writes (or replaces) a region; its sequence number becomes `seq` (default: previous + 1). */
  write(a: { regionId: string; kind: RegionKind; bytes: Uint8Array; seq?: number }): RegionMeta {
    const prev = this.meta(a.regionId);
    const seq = a.seq ?? (prev?.seq ?? 0) + 1;
    const chunks = chunkBytes(a.bytes);
    const meta: RegionMeta = {
      regionId: a.regionId,
      kind: a.kind,
      seq,
      byteLength: a.bytes.byteLength,
      numChunks: chunks.length,
      writtenAt: Date.now(),
    };
    if (prev) this.drop(prev);
    if (a.kind === "durable") {
      const sql = this.storage.sql;
      this.storage.transactionSync(() => {
        sql.exec(
          "INSERT INTO fabric_regions (region_id, kind, seq, byte_length, num_chunks, written_at) VALUES (?, ?, ?, ?, ?, ?)",
          meta.regionId,
          meta.kind,
          meta.seq,
          meta.byteLength,
          meta.numChunks,
          meta.writtenAt,
        );
        chunks.forEach((c, i) => {
          sql.exec(
            "INSERT INTO fabric_chunks (region_id, idx, data) VALUES (?, ?, ?)",
            meta.regionId,
            i,
            c.slice().buffer,
          );
        });
      });
    } else {
      this.memory.set(a.regionId, { meta, bytes: a.bytes.slice() });
    }
    const k = this.stats[a.kind];
    k.numWrites++;
    k.bytesWritten += meta.byteLength;
    k.liveRegions++;
    k.liveBytes += meta.byteLength;
    this.wake(a.regionId, seq);
    return meta;
  }

  /** The region's bytes, or null when it does not exist (or is older than minSeq). */
  read(a: { regionId: string; minSeq?: number }): RegionData | null {
    const meta = this.meta(a.regionId);
    if (!meta || meta.seq < (a.minSeq ?? 0)) return null;
    let bytes: Uint8Array;
    if (meta.kind === "memory") bytes = (this.memory.get(a.regionId) as RegionData).bytes;
    else {
      const rows = this.storage.sql
        .exec("SELECT data FROM fabric_chunks WHERE region_id = ? ORDER BY idx", a.regionId)
        .toArray();
      bytes = joinChunks(
        rows.map((r) => new Uint8Array(r.data as ArrayBuffer)),
        meta.byteLength,
      );
    }
    const k = this.stats[meta.kind];
    k.numReads++;
    k.bytesRead += meta.byteLength;
    return { meta, bytes };
  }

  /** Resolves true once the region reaches `minSeq`, false after `timeoutMs`. */
  wait(a: { regionId: string; minSeq: number; timeoutMs: number }): Promise<boolean> {
    const meta = this.meta(a.regionId);
    if (meta && meta.seq >= a.minSeq) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w: Waiter = { minSeq: a.minSeq, resolve };
      const list = this.waiters.get(a.regionId) ?? [];
      list.push(w);
      this.waiters.set(a.regionId, list);
      setTimeout(() => {
        const l = this.waiters.get(a.regionId);
        const i = l?.indexOf(w) ?? -1;
        if (l && i >= 0) {
          l.splice(i, 1);
          resolve(false);
        }
      }, a.timeoutMs);
    });
  }

  /** Frees a region; returns whether it existed. */
  free(a: { regionId: string }): boolean {
    const meta = this.meta(a.regionId);
    if (!meta) return false;
    this.drop(meta);
    this.stats[meta.kind].numFrees++;
    return true;
  }

  list(): RegionMeta[] {
    const durable = this.storage.sql
      .exec("SELECT * FROM fabric_regions ORDER BY written_at")
      .toArray()
      .map(rowMeta);
    return [...durable, ...[...this.memory.values()].map((r) => r.meta)];
  }

  counters(): FabricStats {
    return structuredClone(this.stats);
  }

  private meta(regionId: string): RegionMeta | null {
    const m = this.memory.get(regionId);
    if (m) return m.meta;
    const row = this.storage.sql
      .exec("SELECT * FROM fabric_regions WHERE region_id = ?", regionId)
      .toArray()[0];
    return row ? rowMeta(row) : null;
  }

  private drop(meta: RegionMeta): void {
    if (meta.kind === "memory") this.memory.delete(meta.regionId);
    else {
      const sql = this.storage.sql;
      this.storage.transactionSync(() => {
        sql.exec("DELETE FROM fabric_chunks WHERE region_id = ?", meta.regionId);
        sql.exec("DELETE FROM fabric_regions WHERE region_id = ?", meta.regionId);
      });
    }
    const k = this.stats[meta.kind];
    k.liveRegions--;
    k.liveBytes -= meta.byteLength;
  }

  private wake(regionId: string, seq: number): void {
    const list = this.waiters.get(regionId);
    if (!list) return;
    const still = list.filter((w) => {
      if (w.minSeq > seq) return true;
      w.resolve(true);
      return false;
    });
    if (still.length > 0) this.waiters.set(regionId, still);
    else this.waiters.delete(regionId);
  }
}

function rowMeta(r: Record<string, SqlStorageValue>): RegionMeta {
  return {
    regionId: r.region_id as string,
    kind: r.kind as RegionKind,
    seq: Number(r.seq),
    byteLength: Number(r.byte_length),
    numChunks: Number(r.num_chunks),
    writtenAt: Number(r.written_at),
  };
}
