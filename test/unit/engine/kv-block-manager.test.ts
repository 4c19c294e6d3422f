import { describe, expect, it } from "vitest";
import { type BlockTable, KvBlockManager } from "../../../shared/engine/kv-block-manager.ts";
import { mulberry32 } from "../../../shared/random.ts";

describe("KvBlockManager", () => {
  it("keeps its invariants under seeded random grow/free sequences", () => {
    for (const seed of [1, 2, 3, 42]) {
      const rng = mulberry32(seed);
      const m = new KvBlockManager(37, 4);
      const tables: { table: BlockTable; tokens: number }[] = [];
      for (let op = 0; op < 2000; op++) {
        const r = rng();
        if (r < 0.3 || tables.length === 0) {
          const tokens = 1 + Math.floor(rng() * 20);
          const table: BlockTable = [];
          const free = m.numFreeBlocks;
          const can = m.canGrow(table, tokens);
          const ok = m.grow(table, tokens);
          expect(ok).toBe(can);
          if (ok) {
            expect(table.length).toBe(Math.ceil(tokens / 4));
            expect(m.numFreeBlocks).toBe(free - table.length);
            tables.push({ table, tokens });
          } else {
            expect(table).toEqual([]);
            expect(m.numFreeBlocks).toBe(free);
          }
        } else if (r < 0.75) {
          const t = tables[Math.floor(rng() * tables.length)]!;
          const tokens = t.tokens + 1 + Math.floor(rng() * 6);
          const before = [...t.table];
          if (m.grow(t.table, tokens)) t.tokens = tokens;
          else expect(t.table).toEqual(before);
          expect(t.table.length).toBe(Math.ceil(t.tokens / 4));
        } else {
          const i = Math.floor(rng() * tables.length);
          m.free(tables[i]!.table);
          tables.splice(i, 1);
        }
        m.checkInvariants();
        const used = tables.flatMap((t) => t.table);
        expect(new Set(used).size).toBe(used.length); // no block in two tables
        expect(used.length + m.numFreeBlocks).toBe(37);
      }
      for (const t of tables) m.free(t.table);
      m.checkInvariants();
      expect(m.numFreeBlocks).toBe(37);
    }
  });

  it("refuses a double free", () => {
    const m = new KvBlockManager(4, 2);
    const t: BlockTable = [];
    m.grow(t, 3);
    const copy = [...t];
    m.free(t);
    expect(() => m.free(copy)).toThrow(/freed twice/);
  });
});
