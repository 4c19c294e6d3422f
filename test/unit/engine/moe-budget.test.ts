/**
 * A model no single NPU can hold (Node, in-process): a seeded MoE checkpoint with 16 wide experts
 * needs more than a 24 MiB NPU budget colocated, so the colocated plan is refused with the memory
 * it needs; as moe-attention (2 attention ranks, 4 expert ranks, each in a 24 MiB arena) it runs,
 * and its greedy output equals the engine's in one unbounded arena.
 */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { createLocalMoe } from "../../../hosts/moe-local.ts";
import { loadNodeInstance, SYNTHETIC_MODEL_PATH } from "../../../hosts/node-engine.ts";
import { buildBigMoe } from "../../../scripts/big-moe.ts";
import { planMemory } from "../../../shared/engine/instance.ts";
import { GREEDY } from "../../../shared/engine/sequence.ts";
import { parseGguf } from "../../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../../shared/model/config.ts";
import { KernelMemoryError } from "../../../shared/model/kernels.ts";
import { minExpertRanks } from "../../../shared/moe/moe-memory.ts";

const BUDGET = 24 * 2 ** 20;
const OPTS = { maxNumSeqs: 8, maxNumBatchedTokens: 256 };

describe("a MoE model larger than one NPU", () => {
  it("is refused colocated with the memory it needs and served as moe-attention", async () => {
    const bytes = buildBigMoe(new Uint8Array(readFileSync(SYNTHETIC_MODEL_PATH)), {
      name: "big-moe-test",
      numExperts: 16,
      expertFf: 768,
      topK: 2,
      seed: 11,
    });
    const file = parseGguf(bytes);
    const c = modelConfigFromGguf(file);
    expect(() => planMemory(file, c, BUDGET, OPTS)).toThrow(KernelMemoryError);
    expect(() => planMemory(file, c, BUDGET, OPTS)).toThrow(
      /needs \d+\.\d MiB .* budget is 24\.0 MiB/,
    );
    expect(() => planMemory(file, c, BUDGET, { ...OPTS, weights: "attention" })).not.toThrow();
    const minE = minExpertRanks(file, c, BUDGET, 2, OPTS.maxNumBatchedTokens);
    expect(minE).not.toBeNull();
    expect(minE!).toBeLessThanOrEqual(4);

    const m = await createLocalMoe(bytes, {
      attention: 2,
      experts: 4,
      rankBudgetBytes: BUDGET,
      instance: OPTS,
    });
    for (const k of [...m.attentionKernels, ...m.expertKernels]) {
      expect(k.usedBytes).toBeLessThanOrEqual(BUDGET);
    }
    const ref = await loadNodeInstance(bytes, { kernels: "wasm", ...OPTS });
    const params = { ...GREEDY, maxTokens: 8, ignoreEos: true };
    const prompts = ["Hello! Who are you?", "Once upon a time", "The little dog"];
    const want: number[][] = [];
    for (const p of prompts) {
      ref.engine.add(p, ref.tokenizer.encode(p), params);
      const ids: number[] = [];
      while (ref.engine.hasWork()) {
        for (const o of (await ref.engine.step()).outputs) ids.push(...o.newTokenIds);
      }
      want.push(ids);
    }
    const got = new Map<string, number[]>();
    for (const p of prompts) {
      const ids = ref.tokenizer.encode(p);
      m.group.ranks[m.group.pick(ids.length + 8)!]!.engine.add(p, ids, params);
    }
    while (m.group.hasWork()) {
      for (const r of await m.group.step()) {
        for (const o of r?.outputs ?? [])
          got.set(o.seqId, [...(got.get(o.seqId) ?? []), ...o.newTokenIds]);
      }
    }
    expect(prompts.map((p) => got.get(p))).toEqual(want);
  });
});
