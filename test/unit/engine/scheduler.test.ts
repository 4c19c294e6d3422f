import { describe, expect, it } from "vitest";
import { type AddOptions, Engine } from "../../../shared/engine/engine.ts";
import type { Executor, StepPlan, StepResult } from "../../../shared/engine/executor.ts";
import { KvBlockManager } from "../../../shared/engine/kv-block-manager.ts";
import { Scheduler } from "../../../shared/engine/scheduler.ts";
import { GREEDY, newSequence } from "../../../shared/engine/sequence.ts";
import { cacheSaltFor } from "../../../shared/serving/prefix-tree.ts";

/** An executor that "samples" a scripted token per sequence (the scheduler is under test, not the maths). */
class ScriptedExecutor implements Executor {
  plans: StepPlan[] = [];
  constructor(private readonly next: (seqId: string, pos: number) => number) {}
  async execute(plan: StepPlan): Promise<StepResult> {
    this.plans.push(plan);
    return {
      sampled: plan.seqs.map((s) =>
        s.sample
          ? {
              tokenId: this.next(s.seqId, s.startPos + s.tokenIds.length),
              logprob: 0,
              topLogprobs: [],
            }
          : null,
      ),
    };
  }
}

const ids = (n: number, base = 10) => Array.from({ length: n }, (_, i) => base + i);

function scheduler(numBlocks = 64, budget = 8, maxNumSeqs = 4) {
  return new Scheduler(
    { maxNumSeqs, maxNumBatchedTokens: budget, maxModelLen: 256, eosIds: [2] },
    new KvBlockManager(numBlocks, 4),
  );
}

describe("Scheduler", () => {
  it("chunks a long prefill under the token budget and decodes alongside", () => {
    const s = scheduler(64, 8);
    s.add(newSequence("a", ids(3), { ...GREEDY, maxTokens: 5 }));
    s.add(newSequence("b", ids(13), { ...GREEDY, maxTokens: 5 }));
    const p1 = s.schedule();
    expect(p1.seqs.map((x) => [x.seqId, x.tokenIds.length, x.sample])).toEqual([
      ["a", 3, true],
      ["b", 5, false],
    ]);
    s.update(p1, { sampled: [{ tokenId: 50, logprob: 0, topLogprobs: [] }, null] });
    const p2 = s.schedule();
    // a decodes one token, b continues its prefill with the rest of the budget
    expect(p2.seqs.map((x) => [x.seqId, x.startPos, x.tokenIds.length, x.sample])).toEqual([
      ["a", 3, 1, true],
      ["b", 5, 7, false],
    ]);
    expect(p2.numScheduledTokens).toBe(8);
  });

  it("finishes on EOS and on maxTokens, freeing blocks", async () => {
    const s = scheduler();
    const exec = new ScriptedExecutor((id, pos) => (id === "eos" && pos === 5 ? 2 : 7));
    const e = new Engine(s, exec, {
      createStreamDecoder: () => ({ push: () => "x", flush: () => "" }),
    });
    e.add("eos", ids(3), { ...GREEDY, maxTokens: 10 });
    e.add("len", ids(3), { ...GREEDY, maxTokens: 4 });
    const finished: Record<string, [string | null, number]> = {};
    while (e.hasWork()) {
      for (const o of (await e.step()).outputs)
        if (o.finished) finished[o.seqId] = [o.finishReason, o.numOutputTokens];
    }
    expect(finished).toEqual({ eos: ["stop", 3], len: ["length", 4] });
    expect(s.blocks.numFreeBlocks).toBe(64);
    s.blocks.checkInvariants();
  });

  it("preempts the newest running sequence when blocks run out and recomputes it later", async () => {
    const s = scheduler(6, 64, 4); // 6 blocks of 4 tokens
    const exec = new ScriptedExecutor(() => 7);
    const e = new Engine(s, exec, {
      createStreamDecoder: () => ({ push: () => "", flush: () => "" }),
    });
    e.add("a", ids(8), { ...GREEDY, maxTokens: 8 }); // grows to 16 tokens = 4 blocks
    e.add("b", ids(8, 100), { ...GREEDY, maxTokens: 8 });
    const out: Record<string, number[]> = { a: [], b: [] };
    let preempted = 0;
    while (e.hasWork()) {
      const r = await e.step();
      preempted += r.preemptedSeqIds.length;
      for (const o of r.outputs) out[o.seqId]!.push(...o.newTokenIds);
      s.blocks.checkInvariants();
    }
    expect(preempted).toBeGreaterThan(0);
    expect(out.a).toHaveLength(8);
    expect(out.b).toHaveLength(8);
    // the victim is resumed from its cached prefix blocks or recomputed: either way it restarts
    // below the position it had reached
    const bPlans = exec.plans.flatMap((p) => p.seqs).filter((x) => x.seqId === "b");
    expect(bPlans.some((x, i) => i > 0 && x.startPos < bPlans[i - 1]!.startPos)).toBe(true);
    expect(s.blocks.numFreeBlocks).toBe(6);
  });

  it("aborts a sequence and frees its blocks", async () => {
    const s = scheduler();
    const e = new Engine(s, new ScriptedExecutor(() => 7), {
      createStreamDecoder: () => ({ push: () => "", flush: () => "" }),
    });
    e.add("a", ids(5), { ...GREEDY, maxTokens: 100 });
    await e.step();
    expect(s.blocks.numFreeBlocks).toBeLessThan(64);
    e.abort("a");
    expect(e.hasWork()).toBe(false);
    expect(s.blocks.numFreeBlocks).toBe(64);
  });

  it("ends text just before a stop string, holding back a possible prefix while streaming", async () => {
    const s = scheduler();
    const pieces = ["Hel", "lo", " wo", "rld", "!", "x"];
    let i = 0;
    const e = new Engine(s, new ScriptedExecutor(() => 7), {
      createStreamDecoder: () => ({ push: () => pieces[i++] ?? "", flush: () => "" }),
    });
    e.add("a", ids(2), { ...GREEDY, maxTokens: 50, stop: ["rld!"] });
    const texts: string[] = [];
    let final: { reason: string | null; n: number } | null = null;
    while (e.hasWork()) {
      for (const o of (await e.step()).outputs) {
        texts.push(o.text);
        if (o.finished) final = { reason: o.finishReason, n: o.numOutputTokens };
      }
    }
    expect(texts.join("")).toBe("Hello wo");
    expect(texts.some((t) => t.includes("r"))).toBe(false);
    expect(final).toEqual({ reason: "stop", n: 5 }); // tokens up to the one that completed "rld!"
  });

  it("shares prefix blocks only between sequences with the same cache salt", async () => {
    const s = scheduler(64, 64);
    const e = new Engine(s, new ScriptedExecutor(() => 7), {
      createStreamDecoder: () => ({ push: () => "", flush: () => "" }),
    });
    const prompt = ids(11); // two full blocks of 4 can be reused, the last token is computed
    const params = { ...GREEDY, maxTokens: 3 };
    const cachedTokens = async (seqId: string, opts: AddOptions) => {
      expect(e.add(seqId, prompt, params, opts)).toBeNull();
      let cached = -1;
      while (e.hasWork())
        for (const o of (await e.step()).outputs) if (o.seqId === seqId) cached = o.numCachedTokens;
      return cached;
    };
    const tenantA = cacheSaltFor("a");
    const tenantB = cacheSaltFor("b");
    expect(await cachedTokens("a1", { cacheSalt: tenantA })).toBe(0);
    expect(await cachedTokens("b1", { cacheSalt: tenantB })).toBe(0);
    expect(await cachedTokens("none1", {})).toBe(0);
    expect(await cachedTokens("b2", { cacheSalt: cacheSaltFor("b", "private") })).toBe(0);
    expect(await cachedTokens("a2", { cacheSalt: tenantA })).toBe(8);
    expect(await cachedTokens("b3", { cacheSalt: tenantB })).toBe(8);
    expect(await cachedTokens("none2", { cacheSalt: "" })).toBe(8);
    // a prefilled sequence (PD decode side) registers its prompt's blocks under its salt
    const tenantC = cacheSaltFor("c");
    const first = { tokenId: 7, logprob: 0, topLogprobs: [] };
    // maxTokens 1: it finishes at once, so only its admission can have registered the blocks
    expect(
      e.addPrefilled("c1", prompt, first, { ...params, maxTokens: 1 }, () => {}, {
        cacheSalt: tenantC,
      }),
    ).not.toBeNull();
    while (e.hasWork()) await e.step();
    expect(await cachedTokens("c2", { cacheSalt: tenantC })).toBe(8);
    expect(s.blocks.numFreeBlocks).toBe(64);
    s.blocks.checkInvariants();
  });
});

describe("Engine facade", () => {
  const decoders = { createStreamDecoder: () => ({ push: () => "", flush: () => "" }) };

  it("resolves a room wait when a step frees blocks, and cancel resolves false", async () => {
    // 4 blocks of 4 tokens: a 13-token prompt takes all of them while it runs
    const s = scheduler(4, 64, 4);
    const e = new Engine(s, new ScriptedExecutor(() => 7), decoders);
    expect(e.add("a", ids(13), { ...GREEDY, maxTokens: 2 })).toBeNull();
    await e.step(); // prefill + first token: 14 tokens in 4 blocks
    expect(e.hasRoomFor(5)).toBe(false);
    const wait = e.whenRoom(5);
    let resolved: boolean | null = null;
    void wait.ready.then((ok) => {
      resolved = ok;
    });
    await Promise.resolve();
    expect(resolved).toBeNull(); // nothing freed yet: no polling, no early wake
    await e.step(); // the second token finishes "a" and frees its blocks
    await Promise.resolve();
    expect(resolved).toBe(true);

    expect(e.add("b", ids(13), { ...GREEDY, maxTokens: 2 })).toBeNull();
    await e.step();
    const cancelled = e.whenRoom(5);
    cancelled.cancel();
    expect(await cancelled.ready).toBe(false);
    e.abort("b"); // frees the blocks; the cancelled wait stays false
    expect(e.hasRoomFor(5)).toBe(true);
  });

  it("wakes a room wait when a stop string ends the last sequence", async () => {
    const s = scheduler(4, 64, 4);
    const pieces = ["a", "STOP"];
    let i = 0;
    const e = new Engine(s, new ScriptedExecutor(() => 7), {
      createStreamDecoder: () => ({ push: () => pieces[i++] ?? "", flush: () => "" }),
    });
    e.add("a", ids(13), { ...GREEDY, maxTokens: 10, stop: ["STOP"] });
    await e.step(); // 14 tokens in all 4 blocks
    const wait = e.whenRoom(5);
    await e.step(); // the stop string ends "a" while its output is processed
    expect(e.hasWork()).toBe(false);
    expect(await wait.ready).toBe(true);
  });

  it("reports load with the expected output length instead of max tokens", () => {
    const s = scheduler(64, 8, 4);
    const e = new Engine(s, new ScriptedExecutor(() => 7), decoders);
    e.add("a", ids(10), { ...GREEDY, maxTokens: 500 });
    e.add("b", ids(10), { ...GREEDY, maxTokens: 500 }, { expectedOutputTokens: 20 });
    expect(e.stats()).toMatchObject({
      numRunning: 0,
      numWaiting: 2,
      numOutstandingTokens: 10 + 500 + 10 + 20,
    });
  });
});
