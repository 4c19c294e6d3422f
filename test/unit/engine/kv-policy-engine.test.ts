/**
 * KV-cache policies through the real engine (the embedded default model, both kernel backends):
 * physical eviction keeps a sequence's blocks within its budget however long it decodes, a
 * budget that covers the whole sequence gives exactly the dense tokens, the block manager's
 * invariants hold with sparse and dense sequences sharing prefixes, and a dense neighbour's
 * tokens never change.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Engine } from "../../../shared/engine/engine.ts";
import type { KvUsage } from "../../../shared/engine/kv-policy/sequence-kv.ts";
import {
  defaultKvCache,
  KV_POLICIES,
  type KvCacheSpec,
} from "../../../shared/engine/kv-policy/spec.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { mulberry32 } from "../../../shared/random.ts";
import { instanceFor, KERNEL_KINDS } from "../../helpers/engine.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

const MODEL = new Uint8Array(readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")));
const BS = 16;
const prompt = (n: number, seed = 1) => {
  const rng = mulberry32(seed);
  return [1, ...Array.from({ length: n - 1 }, () => 300 + Math.floor(rng() * 400))];
};

interface Run {
  ids: number[];
  logprobs: number[];
  usage: KvUsage | null;
  maxBlocks: number;
}

/** Runs sequences to the end, checking the block manager after every step. */
async function runAll(
  engine: Engine,
  seqs: { id: string; prompt: number[]; maxTokens: number; kv?: KvCacheSpec }[],
): Promise<Map<string, Run>> {
  const out = new Map<string, Run>();
  for (const s of seqs) {
    const err = engine.add(
      s.id,
      s.prompt,
      { ...GREEDY, maxTokens: s.maxTokens, ignoreEos: true, logprobs: true },
      {
        ...(s.kv ? { kvCache: s.kv } : {}),
      },
    );
    expect(err).toBeNull();
    out.set(s.id, { ids: [], logprobs: [], usage: null, maxBlocks: 0 });
  }
  const blocks = engine.scheduler.blocks;
  while (engine.hasWork()) {
    const rep = await engine.step();
    blocks.checkInvariants();
    for (const seq of engine.scheduler.running) {
      const r = out.get(seq.seqId) as Run;
      r.maxBlocks = Math.max(r.maxBlocks, seq.blockTable.length);
    }
    for (const o of rep.outputs) {
      const r = out.get(o.seqId) as Run;
      r.ids.push(...o.newTokenIds);
      r.logprobs.push(...o.logprobs.map((t) => t.logprob));
      if (o.finished) r.usage = o.kvCache;
    }
  }
  return out;
}

const spec = (over: Partial<KvCacheSpec>): KvCacheSpec => ({ ...defaultKvCache(BS), ...over });

describe.each(KERNEL_KINDS)("kv-cache policies in the engine (%s kernels)", (kind) => {
  it("a budget covering the whole sequence gives exactly the dense tokens", async () => {
    const { inst } = await instanceFor(MODEL, kind, { maxModelLen: 512 });
    const p = prompt(40);
    const seqs = KV_POLICIES.map((policy) => ({
      id: policy,
      prompt: p,
      maxTokens: 60,
      kv: spec({ policy, budget: 512 }),
    }));
    const runs = await runAll(inst.engine, seqs);
    const dense = (runs.get("dense") as Run).ids;
    expect(dense.length).toBe(60);
    for (const policy of KV_POLICIES) {
      expect((runs.get(policy) as Run).ids, policy).toEqual(dense);
      expect((runs.get(policy) as Run).logprobs, policy).toEqual(
        (runs.get("dense") as Run).logprobs,
      );
      if (policy !== "dense") expect((runs.get(policy) as Run).usage?.evictions).toBe(0);
    }
  });

  it("keeps KV memory within the budget over a long decode; dense and quest grow", async () => {
    const { inst } = await instanceFor(MODEL, kind, { maxModelLen: 1024 });
    const p = prompt(30, 2);
    const budget = 96; // 6 pages of 16
    const seqs = KV_POLICIES.map((policy) => ({
      id: policy,
      prompt: p,
      maxTokens: 400,
      kv: spec({ policy, budget }),
    }));
    const free0 = inst.scheduler.blocks.numFreeBlocks;
    const runs = await runAll(inst.engine, seqs);
    const perBlock = inst.engine.kvBytesPerBlock;
    for (const policy of ["raas", "raas-nopin", "streamingllm", "h2o"] as const) {
      const r = runs.get(policy) as Run;
      expect(r.ids.length).toBe(400);
      expect(r.maxBlocks, policy).toBeLessThanOrEqual(budget / BS);
      expect(r.usage?.peak_kv_bytes, policy).toBeLessThanOrEqual((budget / BS) * perBlock);
      expect(r.usage?.evictions, policy).toBeGreaterThan(15);
      expect(r.usage?.resident_pages, policy).toBe(budget / BS);
    }
    const full = Math.ceil((30 + 400) / BS);
    expect((runs.get("quest") as Run).usage?.peak_kv_bytes).toBe(full * perBlock);
    expect((runs.get("quest") as Run).usage?.evictions).toBe(0);
    expect((runs.get("dense") as Run).maxBlocks).toBe(full);
    expect(inst.scheduler.blocks.numFreeBlocks).toBe(free0);
  });

  it("quest with a small budget attends to fewer keys and changes the logits", async () => {
    const { inst } = await instanceFor(MODEL, kind, { maxModelLen: 1024 });
    const p = prompt(100, 3);
    const runs = await runAll(inst.engine, [
      { id: "d", prompt: p, maxTokens: 200 },
      { id: "q", prompt: p, maxTokens: 200, kv: spec({ policy: "quest", budget: 32 }) },
    ]);
    // (this checkpoint's tokens barely depend on attention; its logprobs do)
    const d = runs.get("d") as Run;
    const q = runs.get("q") as Run;
    const firstDiff = q.logprobs.findIndex((v, i) => v !== d.logprobs[i] || q.ids[i] !== d.ids[i]);
    expect(firstDiff).toBeGreaterThan(0); // the first token comes from the dense prefill
  });
});

describe("kv-cache policies: both kernel backends agree, invariants hold", () => {
  it("js and wasm give the same tokens under every evicting policy", async () => {
    const p = prompt(50, 4);
    const seqs = KV_POLICIES.map((policy) => ({
      id: policy,
      prompt: p,
      maxTokens: 150,
      kv: spec({ policy, budget: 80 }),
    }));
    const results = [];
    for (const kind of KERNEL_KINDS) {
      const { inst } = await instanceFor(MODEL, kind, { maxModelLen: 512 });
      results.push(await runAll(inst.engine, seqs));
    }
    for (const policy of KV_POLICIES) {
      expect(results[1]?.get(policy)?.ids, policy).toEqual(results[0]?.get(policy)?.ids);
      expect(results[1]?.get(policy)?.logprobs, policy).toEqual(results[0]?.get(policy)?.logprobs);
    }
  });

  it("evicts whole pages of two blocks when page_size is twice the block size", async () => {
    const { inst } = await instanceFor(MODEL, "wasm", { maxModelLen: 512 });
    const runs = await runAll(inst.engine, [
      {
        id: "r",
        prompt: prompt(20, 8),
        maxTokens: 300,
        kv: spec({ policy: "raas", budget: 128, pageSize: 32 }),
      },
    ]);
    const r = runs.get("r") as Run;
    expect(r.maxBlocks).toBeLessThanOrEqual(8);
    expect(r.usage?.resident_pages).toBe(4);
    // 320 tokens = 10 pages of 32, 4 resident at the end
    expect(r.usage?.evictions).toBe(6);
  });

  it("keeps decode blocks of sparse sequences out of the prefix cache", async () => {
    const { inst } = await instanceFor(MODEL, "wasm", { maxModelLen: 512 });
    const blocks = inst.scheduler.blocks;
    const p = prompt(40, 5); // 2 full prompt blocks
    await runAll(inst.engine, [
      { id: "q", prompt: p, maxTokens: 100, kv: spec({ policy: "quest", budget: 64 }) },
    ]);
    expect(blocks.numCachedBlocks).toBe(2);
    await runAll(inst.engine, [
      { id: "r", prompt: prompt(40, 6), maxTokens: 100, kv: spec({ policy: "raas", budget: 96 }) },
    ]);
    expect(blocks.numCachedBlocks).toBe(4);
    // a dense sequence caches its decode blocks too
    await runAll(inst.engine, [{ id: "d", prompt: prompt(40, 7), maxTokens: 100 }]);
    expect(blocks.numCachedBlocks).toBe(4 + Math.floor(139 / BS));
  });

  it("random mixes of sparse and dense sequences sharing prefixes keep the invariants", async () => {
    const { inst } = await instanceFor(MODEL, "wasm", {
      maxModelLen: 512,
      maxNumSeqs: 6,
      maxNumBatchedTokens: 64,
    });
    const shared = prompt(48, 9);
    const alone = await runAll(inst.engine, [{ id: "ref", prompt: shared, maxTokens: 80 }]);
    for (let seed = 1; seed <= 3; seed++) {
      const rng = mulberry32(seed);
      const seqs = Array.from({ length: 6 }, (_, i) => {
        const policy = KV_POLICIES[Math.floor(rng() * KV_POLICIES.length)] ?? "dense";
        const own = rng() < 0.5;
        return {
          id: `s${seed}-${i}`,
          prompt: own ? prompt(20 + Math.floor(rng() * 60), seed * 10 + i) : shared,
          maxTokens: 40 + Math.floor(rng() * 120),
          kv: spec({ policy, budget: 128 }),
        };
      });
      seqs.push({
        id: `dense-${seed}`,
        prompt: shared,
        maxTokens: 80,
        kv: spec({ policy: "dense" }),
      });
      const runs = await runAll(inst.engine, seqs);
      // the dense sequence shares its prompt's blocks with sparse ones and is unaffected
      expect(runs.get(`dense-${seed}`)?.ids).toEqual(alone.get("ref")?.ids);
    }
    expect(inst.scheduler.blocks.numFreeBlocks).toBe(inst.scheduler.blocks.numBlocks);
  });
});
