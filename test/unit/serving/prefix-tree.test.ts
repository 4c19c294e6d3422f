/** The JE's prompt tree against a brute-force reference, its LRU bound, and its JSON round trip. */
import { describe, expect, it } from "vitest";
import { KvBlockManager } from "../../../shared/engine/kv-block-manager.ts";
import { mulberry32 } from "../../../shared/random.ts";
import {
  cacheSaltFor,
  DEFAULT_PREFIX_INDEX_TOKENS,
  PrefixTree,
  prefixStrideBlocks,
  promptBlockKeys,
} from "../../../shared/serving/prefix-tree.ts";

const BS = 4;

/**
 * Brute force: every cached prefix (keys joined by "/") with its holders and last touch; LRU by
 * scanning all prefixes for the oldest one that no other prefix extends.
 */
class Reference {
  readonly nodes = new Map<string, { holders: Set<string>; lastAccessAt: number; tick: number }>();
  private tick = 0;

  constructor(readonly maxNodes = Number.POSITIVE_INFINITY) {}

  insert(id: string, keys: string[], now: number): void {
    for (let d = 1; d <= keys.length; d++) {
      const path = keys.slice(0, d).join("/");
      const n = this.nodes.get(path) ?? { holders: new Set(), lastAccessAt: 0, tick: 0 };
      n.holders.add(id);
      n.lastAccessAt = Math.max(n.lastAccessAt, now);
      n.tick = ++this.tick;
      this.nodes.set(path, n);
    }
    while (this.nodes.size > this.maxNodes) {
      let victim: string | null = null;
      for (const [path, n] of this.nodes) {
        const isLeaf = ![...this.nodes.keys()].some((q) => q.startsWith(`${path}/`));
        const v = victim === null ? null : this.nodes.get(victim)!;
        if (
          isLeaf &&
          (!v ||
            n.lastAccessAt < v.lastAccessAt ||
            (n.lastAccessAt === v.lastAccessAt && n.tick < v.tick))
        ) {
          victim = path;
        }
      }
      this.nodes.delete(victim!);
    }
  }

  evict(id: string, key: string): void {
    for (const [path, n] of this.nodes) {
      if (!path.split("/").includes(key)) continue;
      n.holders.delete(id);
      if (n.holders.size === 0) this.nodes.delete(path);
    }
  }

  removeInstance(id: string): void {
    for (const [path, n] of this.nodes) {
      n.holders.delete(id);
      if (n.holders.size === 0) this.nodes.delete(path);
    }
  }

  match(keys: string[]): Map<string, number> {
    const out = new Map<string, number>();
    for (let d = 1; d <= keys.length; d++) {
      const n = this.nodes.get(keys.slice(0, d).join("/"));
      if (!n) break;
      for (const h of n.holders) out.set(h, d);
    }
    return out;
  }

  numNodes(): number {
    return this.nodes.size;
  }
}

const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));

/** Prompts from a tiny vocabulary, so that many share prefixes. */
function randomPrompt(rng: () => number): number[] {
  const len = Math.floor(rng() * 7 * BS);
  return Array.from({ length: len }, () => Math.floor(rng() * 2));
}

describe("promptBlockKeys", () => {
  it("gives the KV block manager's keys for the prompt's full blocks", () => {
    const prompt = Array.from({ length: 4 * BS + 3 }, (_, i) => (i * 7) % 11);
    const keys = promptBlockKeys(prompt, BS);
    expect(keys).toHaveLength(4);
    // the block manager registers the same keys: a second prompt hits exactly those blocks
    const m = new KvBlockManager(16, BS);
    const table: number[] = [];
    m.grow(table, prompt.length);
    m.commitFull(table, prompt, prompt.length);
    const again: number[] = [];
    expect(m.acquirePrefix(again, prompt, prompt.length)).toBe(4 * BS);
    expect(promptBlockKeys(prompt, BS, { maxTokens: 2 * BS + 1 })).toEqual(keys.slice(0, 2));
    // chained: changing the first token changes every key
    const other = promptBlockKeys([99, ...prompt.slice(1)], BS);
    for (let i = 0; i < 4; i++) expect(other[i]).not.toBe(keys[i]);
  });

  it("gives the keys the KV block manager registers for a salted sequence", () => {
    const prompt = Array.from({ length: 3 * BS + 1 }, (_, i) => (i * 5) % 9);
    const m = new KvBlockManager(16, BS);
    const keysBySalt = new Map<string, string[]>();
    for (const cacheSalt of ["", cacheSaltFor("t1"), cacheSaltFor("t1", "s"), cacheSaltFor("t2")]) {
      const table: number[] = [];
      m.grow(table, prompt.length);
      m.commitFull(table, prompt, prompt.length, cacheSalt);
      const engineKeys = table.slice(0, 3).map((id) => m.keyOf(id));
      expect(promptBlockKeys(prompt, BS, { cacheSalt })).toEqual(engineKeys);
      keysBySalt.set(cacheSalt, promptBlockKeys(prompt, BS, { cacheSalt }));
    }
    expect(promptBlockKeys(prompt, BS, { cacheSalt: "" })).toEqual(promptBlockKeys(prompt, BS));
    // no key is shared between salts
    const all = [...keysBySalt.values()].flat();
    expect(new Set(all).size).toBe(all.length);
  });

  it("keeps every strideBlocks-th key, the one ending each span", () => {
    const prompt = Array.from({ length: 10 * BS + BS - 1 }, (_, i) => (i * 3) % 13);
    const every = promptBlockKeys(prompt, BS);
    // blocks 4 and 8 end a 4-block span; blocks 9, 10 and the partial one end none
    expect(promptBlockKeys(prompt, BS, { strideBlocks: 4 })).toEqual([every[3], every[7]]);
    expect(promptBlockKeys(prompt, BS, { strideBlocks: 11 })).toEqual([]);
    expect(promptBlockKeys(prompt, BS, { strideBlocks: 1 })).toEqual(every);
    // a tree keyed in spans matches a shared prefix in whole spans
    const tree = new PrefixTree();
    tree.insert("a", promptBlockKeys(prompt, BS, { strideBlocks: 4 }), 1);
    const longer = [...prompt.slice(0, 9 * BS), 1, 2, 3];
    expect(tree.match(promptBlockKeys(longer, BS, { strideBlocks: 4 })).get("a")).toBe(2);
    const shorter = prompt.slice(0, 7 * BS);
    expect(tree.match(promptBlockKeys(shorter, BS, { strideBlocks: 4 })).get("a")).toBe(1);
  });
});

describe("prefixStrideBlocks", () => {
  it("is the index span in blocks, and refuses a span that is not a multiple of the block", () => {
    expect(prefixStrideBlocks(DEFAULT_PREFIX_INDEX_TOKENS, 16)).toBe(32);
    expect(prefixStrideBlocks(16, 16)).toBe(1);
    expect(() => prefixStrideBlocks(24, 16)).toThrow(/multiple of the block size 16/);
    expect(() => prefixStrideBlocks(8, 16)).toThrow(/multiple/);
  });
});

describe("cacheSaltFor", () => {
  it("gives each (tenant, client salt) pair its own salt", () => {
    const pairs: [string, string | null | undefined][] = [
      ["a", "bc"],
      ["ab", "c"],
      ["abc", null],
      ["abc", undefined],
      ["a:b", "c"],
      ["a", "b:c"],
      ["a", null],
      ["1:a", null],
      ["b", null],
    ];
    const salts = pairs.map(([tenant, salt]) => cacheSaltFor(tenant, salt));
    // only "abc"+null and "abc"+undefined (both: no client salt) coincide
    expect(salts[2]).toBe(salts[3]);
    const distinct = salts.filter((_, i) => i !== 3);
    expect(new Set(distinct).size).toBe(distinct.length);
    for (const s of salts) expect(s).not.toBe(""); // never the unsalted cache
    expect(cacheSaltFor("a", "bc")).toBe(cacheSaltFor("a", "bc"));
  });
});

describe("PrefixTree", () => {
  it("matches a brute-force reference under seeded random insert/match/evict", () => {
    for (const seed of [1, 2, 3, 42]) {
      const rng = mulberry32(seed);
      const tree = new PrefixTree(1_000_000);
      const ref = new Reference();
      const instances = ["inst_a", "inst_b", "inst_c", "inst_d"];
      const seen: string[][] = [];
      for (let op = 0; op < 1500; op++) {
        const r = rng();
        const id = instances[Math.floor(rng() * instances.length)] as string;
        const keys = promptBlockKeys(randomPrompt(rng), BS);
        if (r < 0.45) {
          tree.insert(id, keys, op);
          ref.insert(id, keys, op);
          seen.push(keys);
        } else if (r < 0.85) {
          // match either a fresh prompt or one inserted before (cut short sometimes)
          const q = rng() < 0.6 && seen.length > 0 ? seen[Math.floor(rng() * seen.length)]! : keys;
          const cut = q.slice(0, Math.floor(rng() * (q.length + 1)));
          expect(sorted(tree.match(cut))).toEqual(sorted(ref.match(cut)));
        } else if (r < 0.97 && seen.length > 0) {
          const q = seen[Math.floor(rng() * seen.length)]!;
          if (q.length === 0) continue;
          const key = q[Math.floor(rng() * q.length)]!;
          tree.evict(id, [key]);
          ref.evict(id, key);
        } else {
          tree.removeInstance(id);
          ref.removeInstance(id);
        }
        tree.checkInvariants();
        expect(tree.numNodes).toBe(ref.numNodes());
      }
      expect(tree.numNodes).toBeGreaterThan(10);
    }
  });

  it("reports the longest cached prefix per instance", () => {
    const tree = new PrefixTree();
    const a = promptBlockKeys(
      Array.from({ length: 5 * BS }, (_, i) => i),
      BS,
    );
    const b = [...a.slice(0, 2), ...promptBlockKeys([7, 7, 7, 7, 7, 7, 7, 7], BS)];
    tree.insert("inst_1", a, 1);
    tree.insert("inst_2", a.slice(0, 3), 2);
    tree.insert("inst_3", b, 3);
    expect(sorted(tree.match(a))).toEqual([
      ["inst_1", 5],
      ["inst_2", 3],
      ["inst_3", 2],
    ]);
    expect(tree.match([])).toEqual(new Map());
    tree.evict("inst_1", [a[2]!]);
    expect(tree.match(a).get("inst_1")).toBe(2);
    tree.evict("inst_2");
    expect(tree.match(a).has("inst_2")).toBe(false);
    expect(tree.instances()).toEqual(["inst_1", "inst_3"]);
  });

  it("keeps at most maxNodes nodes, evicting the least recently used leaves", () => {
    const tree = new PrefixTree(8);
    const p = (t: number) =>
      promptBlockKeys(
        Array.from({ length: 4 * BS }, () => t),
        BS,
      );
    tree.insert("inst_a", p(1), 10);
    tree.insert("inst_b", p(2), 20);
    expect(tree.numNodes).toBe(8);
    tree.insert("inst_a", p(1), 30); // p(1) used again: p(2) is now the least recently used
    tree.insert("inst_c", p(3).slice(0, 2), 40);
    // leaves go deepest first: p(2) lost its two last blocks, p(1) kept all four
    expect(tree.numNodes).toBe(8);
    expect(tree.match(p(2)).get("inst_b")).toBe(2);
    expect(tree.match(p(1)).get("inst_a")).toBe(4);
    expect(tree.match(p(3)).get("inst_c")).toBe(2);
    // touching only the head of p(1) leaves its tail older than everything but p(2)
    tree.insert("inst_a", p(1).slice(0, 1), 50);
    tree.insert("inst_c", p(3), 60);
    expect(tree.match(p(2)).has("inst_b")).toBe(false);
    tree.insert("inst_e", p(4).slice(0, 1), 65);
    expect(tree.match(p(1)).get("inst_a")).toBe(3);
    expect(tree.match(p(3)).get("inst_c")).toBe(4);
    // a path longer than the bound keeps its leading blocks
    const long = promptBlockKeys(
      Array.from({ length: 12 * BS }, (_, i) => i),
      BS,
    );
    tree.insert("inst_d", long, 70);
    expect(tree.numNodes).toBe(8);
    expect(tree.match(long).get("inst_d")).toBe(8);
    tree.checkInvariants();
  });

  it("evicts exactly as a brute-force LRU under a tight bound", () => {
    for (const seed of [7, 8]) {
      const rng = mulberry32(seed);
      const tree = new PrefixTree(40);
      const ref = new Reference(40);
      const seen: string[][] = [];
      for (let op = 0; op < 1500; op++) {
        const id = `inst_${Math.floor(rng() * 3)}`;
        const keys = promptBlockKeys(randomPrompt(rng), BS);
        const r = rng();
        if (r < 0.5) {
          const now = Math.floor(op / 3); // equal timestamps: the tick decides
          tree.insert(id, keys, now);
          ref.insert(id, keys, now);
          seen.push(keys);
          // what was just inserted is matched in full (it is the most recent path)
          expect(tree.match(keys).get(id) ?? 0).toBe(keys.length);
        } else if (r < 0.9 || seen.length === 0) {
          const q = seen.length > 0 && rng() < 0.7 ? seen[Math.floor(rng() * seen.length)]! : keys;
          expect(sorted(tree.match(q))).toEqual(sorted(ref.match(q)));
        } else {
          const q = seen[Math.floor(rng() * seen.length)]!;
          if (q.length > 0) {
            const key = q[Math.floor(rng() * q.length)]!;
            tree.evict(id, [key]);
            ref.evict(id, key);
          }
        }
        expect(tree.numNodes).toBeLessThanOrEqual(40);
        expect(tree.numNodes).toBe(ref.numNodes());
        tree.checkInvariants();
      }
    }
  });

  it("round-trips through JSON with the same matches and the same LRU order", () => {
    const rng = mulberry32(11);
    const tree = new PrefixTree(60);
    const prompts: string[][] = [];
    for (let op = 0; op < 200; op++) {
      const keys = promptBlockKeys(randomPrompt(rng), BS);
      prompts.push(keys);
      tree.insert(`inst_${op % 3}`, keys, Math.floor(op / 4));
      if (op % 17 === 0) tree.evict("inst_1", keys.slice(1, 2));
    }
    const json = JSON.parse(JSON.stringify(tree.toJSON()));
    const copy = PrefixTree.fromJSON(json);
    expect(copy.toJSON()).toEqual(tree.toJSON());
    for (const keys of prompts) expect(copy.match(keys)).toEqual(tree.match(keys));
    // the same future gives the same tree
    for (let op = 0; op < 50; op++) {
      const keys = promptBlockKeys(randomPrompt(rng), BS);
      tree.insert("inst_x", keys, 100 + op);
      copy.insert("inst_x", keys, 100 + op);
    }
    expect(copy.toJSON()).toEqual(tree.toJSON());
    expect(() => PrefixTree.fromJSON({ ...json, version: 2 })).toThrow(/version/);
  });
});
