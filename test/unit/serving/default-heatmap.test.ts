/**
 * The default PD heatmap of a model nobody profiled: its buckets, that it is a usable profile
 * and the same on every derivation, that its signs match those of a card whose step costs were
 * measured on the model (not derived), and the holder a ModelScheduler keeps.
 */
import { readFileSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { parseGguf } from "../../../shared/gguf/gguf.ts";
import { modelConfigFromGguf } from "../../../shared/model/config.ts";
import {
  DEFAULT_HEATMAP,
  DefaultHeatmap,
  defaultHeatmapBuckets,
  defaultPdProfile,
  mixesModes,
} from "../../../shared/serving/default-heatmap.ts";
import { checkPdProfile } from "../../../shared/serving/pd-profile.ts";
import { type DeriveTarget, deriveCard } from "../../../shared/sim/derive-card.ts";
import { measureHeatmap } from "../../../shared/sim/heatmap.ts";
import { REFERENCE_CPU_CARD } from "../../../shared/sim/reference-card.ts";
import { REPO_ROOT } from "../../helpers/models.ts";

function targetOf(path: string): DeriveTarget {
  const bytes = new Uint8Array(readFileSync(resolve(REPO_ROOT, path)));
  const config = modelConfigFromGguf(parseGguf(bytes, { headerOnly: true }));
  return { config, weightBytes: statSync(resolve(REPO_ROOT, path)).size };
}

const SHAPE = { maxNumSeqs: 32, maxNumBatchedTokens: 256, blockSize: 16 };
const COLOC = { mode: "colocated" as const };
const PD = { mode: "pd" as const };

describe("defaultPdProfile", () => {
  it("buckets inputs up to half the context and outputs up to a quarter", () => {
    expect(defaultHeatmapBuckets(512)).toEqual({
      inputBuckets: [32, 128],
      outputBuckets: [16, 128],
    });
    expect(defaultHeatmapBuckets(131072)).toEqual({
      inputBuckets: [32, 128, 512, 2048, 8192],
      outputBuckets: [16, 128, 512],
    });
    expect(defaultHeatmapBuckets(32).inputBuckets).toEqual([]);
  });

  it("gives the lemma model a usable profile, the same on every derivation", () => {
    const lemma = targetOf("models/lemma-moe.gguf");
    const p = defaultPdProfile("lemma-moe", lemma, SHAPE);
    expect(checkPdProfile(p)).toBeNull();
    expect(p).toMatchObject({
      model: "lemma-moe",
      inputBuckets: [32, 128],
      outputBuckets: [16, 128],
    });
    expect(defaultPdProfile("lemma-moe", lemma, SHAPE)).toEqual(p);
    // colocated serves long outputs faster here: PD's decode instance takes every sequence
    for (const row of p.colocatedMs.keys()) {
      expect(p.colocatedMs[row]![1]!).toBeLessThan(p.pdMs[row]![1]!);
    }
  });

  it("has the signs of a card whose step costs were measured on the model", () => {
    // profile:steps on `make-big-moe --experts 8 --ff 512` (the synthetic model with experts 8x
    // as wide; 9,964,352 bytes, not committed), on this machine: a 0.09743, b 0.156, c 1.112e-4,
    // d 0.1047 (R^2 0.968); derived: a 0.559, b 0.175, c 1.007e-4, d 0.0093
    const synthetic = targetOf("models/synthetic-moe.gguf").config;
    const wide = { config: { ...synthetic, moeIntermediateSize: 512 }, weightBytes: 9_964_352 };
    const derived = deriveCard(wide, REFERENCE_CPU_CARD, SHAPE);
    const measured = { ...derived, a: 0.09743, b: 0.156, c: 1.112e-4, d: 0.1047 };
    const opts = {
      ...defaultHeatmapBuckets(derived.maxModelLen),
      utilizations: [DEFAULT_HEATMAP.utilization],
      requestsPerCell: DEFAULT_HEATMAP.requestsPerCell,
      seed: DEFAULT_HEATMAP.seed,
    };
    const a = measureHeatmap(derived, opts).signs.flat(2);
    const b = measureHeatmap(measured, opts).signs.flat(2);
    expect(a).toHaveLength(9);
    expect(a.filter((s, i) => s === b[i]).length).toBeGreaterThanOrEqual(8);
  });
});

describe("DefaultHeatmap", () => {
  it("derives once, only when the groups mix modes and the header was read", () => {
    const h = new DefaultHeatmap("lemma-moe", SHAPE);
    expect(h.for([COLOC, PD])).toBeNull(); // no header yet
    const bytes = new Uint8Array(readFileSync(resolve(REPO_ROOT, "models/lemma-moe.gguf")));
    h.readHeader(parseGguf(bytes, { headerOnly: true }), bytes.byteLength);
    expect(h.target).toEqual(targetOf("models/lemma-moe.gguf"));
    expect(mixesModes([COLOC, COLOC])).toBe(false);
    expect(h.for([COLOC, COLOC])).toBeNull();
    const p = h.for([COLOC, PD]);
    expect(p && checkPdProfile(p)).toBeNull();
    expect(h.for([PD, COLOC])).toBe(p); // kept, not derived again
  });

  it("answers null, once, for a model the simulator cannot run", () => {
    const h = new DefaultHeatmap("tiny-ctx", SHAPE);
    const lemma = targetOf("models/lemma-moe.gguf");
    h.target = { ...lemma, config: { ...lemma.config, maxPositionEmbeddings: 32 } };
    expect(h.for([COLOC, PD])).toBeNull();
    expect(h.error).toMatch(/too short/);
    expect(h.for([COLOC, PD])).toBeNull();
  });
});
