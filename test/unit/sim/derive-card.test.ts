/**
 * Deriving a model card from a model's architecture and this engine's measured card: the
 * reference in shared/ matches the checkpoint it was measured on, the measured card itself fits the
 * multiply-add model (one rate behind b, c and d), and a derived card scales by hand-counted
 * multiply-adds and by the weights' bytes.
 */
import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { parseGguf } from "../../../shared/gguf/gguf.ts";
import { type ModelConfig, modelConfigFromGguf } from "../../../shared/model/config.ts";
import { deriveCard, engineKvBytesPerToken, stepMacs } from "../../../shared/sim/derive-card.ts";
import { REFERENCE_CPU_CARD, REFERENCE_FABRIC } from "../../../shared/sim/reference-card.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

/** |a / b - 1|: derived coefficients keep 4 significant digits. */
const relErr = (a: number, b: number) => Math.abs(a / b - 1);

function configOf(path: string): ModelConfig {
  const bytes = new Uint8Array(readFileSync(resolve(REPO_ROOT, path)));
  return modelConfigFromGguf(parseGguf(bytes, { headerOnly: true }));
}

describe("the reference card", () => {
  it("is models/synthetic-moe.gguf's shape and size", () => {
    expect(REFERENCE_CPU_CARD.card.checkpoint).toBe("synthetic-moe.gguf");
    expect(REFERENCE_CPU_CARD.card).toMatchObject(REFERENCE_FABRIC);
    const config = configOf("models/synthetic-moe.gguf");
    for (const [k, v] of Object.entries(REFERENCE_CPU_CARD.config)) {
      expect(config[k as keyof ModelConfig], k).toBe(v);
    }
    expect(REFERENCE_CPU_CARD.weightBytes).toBe(
      statSync(resolve(REPO_ROOT, "models/synthetic-moe.gguf")).size,
    );
  });

  it("fits one multiply-add rate: b, c and d agree within 15%", () => {
    const { card, config } = REFERENCE_CPU_CARD;
    const macs = stepMacs(config);
    const rates = [macs.token / card.b, macs.pair / card.c, macs.seq / card.d];
    const mean = rates.reduce((a, b) => a + b, 0) / rates.length;
    for (const r of rates) expect(Math.abs(r / mean - 1)).toBeLessThan(0.15);
  });
});

describe("deriveCard", () => {
  it("scales the lemma model by its hand-counted multiply-adds", () => {
    const lemma = configOf("models/lemma-moe.gguf");
    // lemma: 3 layers, h 64, 4 heads x 16 (q 64), 2 KV heads (kv 32), 4 experts top-2 of ffn 96,
    // vocab 41. Per token per layer: 64 x (64 + 64) + 64 x 64 + 2 x 3 x 64 x 96 + 64 x 4 = 49408
    // synthetic: 4 layers, h 96, q 96, kv 32, 8 experts top-2 of ffn 64, vocab 768: 62208
    const shape = { maxNumSeqs: 8, maxNumBatchedTokens: 256, blockSize: 16 };
    const weightBytes = statSync(resolve(REPO_ROOT, "models/lemma-moe.gguf")).size;
    const d = deriveCard({ config: lemma, weightBytes }, REFERENCE_CPU_CARD, shape);
    const ref = REFERENCE_CPU_CARD.card;
    expect(relErr(d.b, (ref.b * 3 * 49408) / (4 * 62208))).toBeLessThan(1e-3);
    expect(relErr(d.c, (ref.c * 3 * 2 * 64) / (4 * 2 * 96))).toBeLessThan(1e-3);
    expect(relErr(d.d, (ref.d * 41 * 64) / (768 * 96))).toBeLessThan(1e-3);
    expect(relErr(d.a, (ref.a * weightBytes) / REFERENCE_CPU_CARD.weightBytes)).toBeLessThan(1e-3);
    // f32 K and V: 3 layers x 2 x 32 x 4 bytes
    expect(d.kvBytesPerToken).toBe(768);
    expect(engineKvBytesPerToken(lemma)).toBe(768);
    expect(d).toMatchObject({
      maxModelLen: 512,
      ...shape,
      fabricGBps: REFERENCE_FABRIC.fabricGBps,
    });
    expect(d.checkpoint).toBeUndefined();
    expect(d.source).toMatch(/derived/);
  });

  it("counts a dense FFN whole and a wider expert by its width", () => {
    const base = configOf("models/synthetic-moe.gguf");
    const wide = { ...base, moeIntermediateSize: 512 };
    const dense = { ...base, numExperts: 0, numExpertsPerTok: 0, intermediateSize: 256 };
    const m = stepMacs(base).token;
    // 4 layers x 2 experts x 3 x 96 x (512 - 64) more
    expect(stepMacs(wide).token - m).toBe(4 * 2 * 3 * 96 * 448);
    // dense 3 x 96 x 256 in place of 2 x 3 x 96 x 64 + the router's 96 x 8
    expect(stepMacs(dense).token - m).toBe(4 * (3 * 96 * 256 - 2 * 3 * 96 * 64 - 96 * 8));
  });
});
