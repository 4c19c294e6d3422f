/** The lemma-chain task: seeded problems, their milestone/phoenix structure, the checker. */
import { describe, expect, it } from "vitest";
import {
  checkLemma,
  FACT_NAMES,
  LEMMA_VOCAB,
  lemmaIds,
  lemmaProblem,
  trainingIds,
} from "../../../shared/eval/lemma-chain.ts";

describe("lemma chain", () => {
  it("is seeded: the same (seed, index) gives the same problem, others differ", () => {
    expect(lemmaProblem(7, 3)).toEqual(lemmaProblem(7, 3));
    expect(lemmaProblem(7, 3).prompt).not.toBe(lemmaProblem(7, 4).prompt);
    expect(lemmaProblem(8, 3).prompt).not.toBe(lemmaProblem(7, 3).prompt);
  });

  it("computes each lemma from the previous one and the one w lines back", () => {
    for (let i = 0; i < 50; i++) {
      const p = lemmaProblem(1, i);
      const lines = p.answer.split(";").slice(1);
      expect(p.answer.startsWith(`00:${p.facts[p.seedFact]}+0=`)).toBe(true);
      const L = [p.facts[p.seedFact] as number, ...p.lemmas];
      for (let j = 1; j <= p.stages; j++) {
        const [a, b, c] = (lines[j - 1] as string).slice(3).split(/[+=]/).map(Number);
        expect(a).toBe(L[j - 1]);
        expect(b).toBe(L[Math.max(0, j - p.lifetime)]);
        expect(c).toBe(((a as number) + (b as number)) % 10);
      }
      // the query carries the values of the final and seed facts, which stay among the facts;
      // the final line reads F's digit from the prompt (the phoenix)
      expect(p.prompt).toContain(`${FACT_NAMES[p.finalFact]}=${p.facts[p.finalFact]};`);
      expect(p.prompt).toContain(`${FACT_NAMES[p.seedFact]}=${p.facts[p.seedFact]};`);
      expect(p.prompt.endsWith(`F${p.facts[p.finalFact]}G${p.facts[p.seedFact]}`)).toBe(true);
      expect(p.prompt).toMatch(/^([a-p]=\d;){16}Q\d\dW\dF\dG\d$/);
      expect(p.answer.endsWith(`A${L[p.stages]}*${p.facts[p.finalFact]}=${p.final}.`)).toBe(true);
    }
  });

  it("checks exact match and per-lemma accuracy", () => {
    const p = lemmaProblem(2, 0);
    expect(checkLemma(p, p.answer)).toEqual({
      exact: true,
      lemmaAccuracy: 1,
      chainConsistency: 1,
      phoenix: true,
    });
    const wrongFinal = p.answer.replace(/=(\d)\.$/, (_, d) => `=${(Number(d) + 1) % 10}.`);
    expect(checkLemma(p, wrongFinal).exact).toBe(false);
    expect(checkLemma(p, wrongFinal).phoenix).toBe(true);
    // the phoenix misread: the final line's second factor is not F's digit
    const wrongPhoenix = p.answer.replace(/\*(\d)=/, (_, d) => `*${(Number(d) + 1) % 10}=`);
    expect(checkLemma(p, wrongPhoenix).phoenix).toBe(false);
    expect(checkLemma(p, "").phoenix).toBe(false);
    const firstWrong = p.answer.replace(
      /(01:\d\+\d=)(\d)/,
      (_, h, d) => `${h}${(Number(d) + 1) % 10}`,
    );
    expect(checkLemma(p, firstWrong).lemmaAccuracy).toBeCloseTo((p.stages - 1) / p.stages);
    // line 1's wrong c breaks its own sum and the lines that read it (line 2, line 1 + w)
    const readers = new Set([2, 1 + p.lifetime].filter((j) => j <= p.stages)).size;
    expect(checkLemma(p, firstWrong).chainConsistency).toBeCloseTo(
      (p.stages - 1 - readers) / p.stages,
    );
    expect(checkLemma(p, "").exact).toBe(false);
    expect(checkLemma(p, "").chainConsistency).toBe(0);
    // a wrong seed read from the prompt, then a chain computed right from it: consistent
    const seed = ((p.facts[p.seedFact] as number) + 1) % 10;
    const L = [seed];
    let out = `00:${seed}+0=${seed};`;
    for (let j = 1; j <= p.stages; j++) {
      const a = L[j - 1] as number;
      const b = L[Math.max(0, j - p.lifetime)] as number;
      L.push((a + b) % 10);
      out += `${String(j).padStart(2, "0")}:${a}+${b}=${(a + b) % 10};`;
    }
    expect(checkLemma(p, out).chainConsistency).toBe(1);
  });

  it("has one token per character, with BOS, the answer marker and EOS around", () => {
    const p = lemmaProblem(3, 1);
    const t = trainingIds(p);
    expect(t.ids[0]).toBe(1);
    expect(t.ids[t.ids.length - 1]).toBe(2);
    expect(t.ids.length).toBe(p.prompt.length + p.answer.length + 3);
    expect(LEMMA_VOCAB[t.ids[t.numPrompt - 1] as number]).toBe(">");
    expect(new Set(LEMMA_VOCAB).size).toBe(LEMMA_VOCAB.length);
    expect(() => lemmaIds("x")).toThrow(RangeError);
  });
});
