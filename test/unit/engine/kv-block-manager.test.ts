import { describe, expect, it } from "vitest";
import { blockKey } from "../../../shared/block-key.ts";
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

describe("KvBlockManager prefix cache", () => {
  it("reuses the full blocks of a shared prefix and never a partial or different one", () => {
    const m = new KvBlockManager(16, 4);
    const a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    const ta: number[] = [];
    expect(m.acquirePrefix(ta, a, a.length - 1)).toBe(0);
    m.grow(ta, a.length);
    m.commitFull(ta, a, a.length);
    expect(m.numCachedBlocks).toBe(2);
    // same first 8 tokens, different tail: both full blocks are shared
    const b = [1, 2, 3, 4, 5, 6, 7, 8, 99];
    const tb: number[] = [];
    expect(m.acquirePrefix(tb, b, b.length - 1)).toBe(8);
    expect(tb).toEqual(ta.slice(0, 2));
    expect(m.refCount(ta[0]!)).toBe(2);
    // a different second block: only the first is shared
    const c = [1, 2, 3, 4, 5, 6, 7, 0, 9];
    const tc: number[] = [];
    expect(m.acquirePrefix(tc, c, c.length - 1)).toBe(4);
    // a prompt of exactly two blocks keeps its last token to compute
    const d = [1, 2, 3, 4, 5, 6, 7, 8];
    const td: number[] = [];
    expect(m.acquirePrefix(td, d, d.length - 1)).toBe(4);
    for (const t of [ta, tb, tc, td]) m.free(t);
    m.checkInvariants();
    expect(m.numFreeBlocks).toBe(16);
    // freed blocks stay cached until their memory is reused
    const te: number[] = [];
    expect(m.acquirePrefix(te, a, a.length - 1)).toBe(8);
    m.free(te);
    const big: number[] = [];
    m.grow(big, 16 * 4);
    expect(m.numCachedBlocks).toBe(0);
    m.free(big);
    m.checkInvariants();
  });

  // Keys blind to the salt (a first block is keyed as if unsalted): every salt's chain collides
  // with every other's, and hits must still stay within one salt.
  const saltBlindKey = (parent: string, t: readonly number[], from: number, to: number) =>
    blockKey(/^[0-9a-f]{16}$/.test(parent) ? parent : "", t, from, to);

  for (const [name, keyFn] of [
    ["chained keys", blockKey],
    ["keys that collide across salts", saltBlindKey],
  ] as const) {
    it(`keeps invariants and hits only same-salt prefixes under seeded random workloads (${name})`, () => {
      const rng = mulberry32(11);
      const m = new KvBlockManager(24, 4, keyFn);
      const live: { table: BlockTable; tokens: number[] }[] = [];
      const prefixes = [
        [5, 6, 7, 8, 9, 10, 11, 12],
        [5, 6, 7, 8, 1, 1, 1, 1],
        [3, 3, 3, 3],
      ];
      const salts = ["", "", "a", "b"];
      // every (salt, full-block prefix) ever committed: a hit must be one of them
      const committed = new Set<string>();
      const prefixId = (salt: string, tokens: number[]) => JSON.stringify([salt, tokens]);
      for (let op = 0; op < 3000; op++) {
        if (rng() < 0.5 || live.length === 0) {
          const salt = salts[Math.floor(rng() * salts.length)]!;
          const tokens = [
            ...prefixes[Math.floor(rng() * 3)]!,
            ...Array.from({ length: Math.floor(rng() * 9) }, () => Math.floor(rng() * 4)),
          ];
          const table: BlockTable = [];
          const hit = m.acquirePrefix(table, tokens, tokens.length - 1, salt);
          expect(hit % 4).toBe(0);
          if (hit > 0) expect(committed.has(prefixId(salt, tokens.slice(0, hit)))).toBe(true);
          if (m.grow(table, tokens.length)) {
            m.commitFull(table, tokens, tokens.length, salt);
            for (let n = 4; n <= tokens.length; n += 4)
              committed.add(prefixId(salt, tokens.slice(0, n)));
            live.push({ table, tokens });
          } else m.free(table);
        } else {
          const i = Math.floor(rng() * live.length);
          m.free(live[i]!.table);
          live.splice(i, 1);
        }
        m.checkInvariants();
      }
      expect(m.numHitTokens).toBeGreaterThan(0);
    });
  }

  it("roots the keys at the cache salt: different salts share no block, one salt shares as before", () => {
    const m = new KvBlockManager(16, 4);
    const prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    const tenantA: number[] = [];
    m.grow(tenantA, prompt.length);
    m.commitFull(tenantA, prompt, prompt.length, "a");
    const keysA = tenantA.slice(0, 2).map((b) => m.keyOf(b));
    const tenantB: number[] = [];
    expect(m.acquirePrefix(tenantB, prompt, prompt.length - 1, "b")).toBe(0);
    m.grow(tenantB, prompt.length);
    m.commitFull(tenantB, prompt, prompt.length, "b");
    const keysB = tenantB.slice(0, 2).map((b) => m.keyOf(b));
    for (const k of keysB) expect(keysA).not.toContain(k);
    expect(m.numCachedBlocks).toBe(4);
    // the unsalted cache is a salt of its own
    expect(m.acquirePrefix([], prompt, prompt.length - 1)).toBe(0);
    const againA: number[] = [];
    expect(m.acquirePrefix(againA, prompt, prompt.length - 1, "a")).toBe(8);
    expect(againA).toEqual(tenantA.slice(0, 2));
    for (const t of [tenantA, tenantB, againA]) m.free(t);
    m.checkInvariants();
  });
});
