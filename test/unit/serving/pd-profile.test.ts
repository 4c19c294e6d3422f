/** The PD heatmap lookup, the PD-aware group choice and the output-length predictor. */
import { describe, expect, it } from "vitest";
import { mulberry32 } from "../../../shared/random.ts";
import {
  bucketIndex,
  checkPdProfile,
  choosePdGroup,
  DEFAULT_PD_CHOICE,
  OutputLengthPredictor,
  type PdProfile,
  profileMs,
} from "../../../shared/serving/pd-profile.ts";

/** PD wins for long prompts with short outputs (the paper's Fig. 6 shape), colocated elsewhere. */
const PROFILE: PdProfile = {
  model: "tiny",
  measuredAt: 1_700_000_000_000,
  inputBuckets: [128, 512, 2048],
  outputBuckets: [32, 256, 1024],
  colocatedMs: [
    [100, 400, 1200],
    [300, 700, 1600],
    [1000, 1500, 2600],
  ],
  pdMs: [
    [120, 480, 1400],
    [250, 760, 1800],
    [600, 1200, 2900],
  ],
};

describe("PdProfile", () => {
  it("validates its shape", () => {
    expect(checkPdProfile(PROFILE)).toBeNull();
    expect(checkPdProfile({ ...PROFILE, inputBuckets: [128, 128, 2048] })).toMatch(/increasing/);
    expect(checkPdProfile({ ...PROFILE, pdMs: PROFILE.pdMs.slice(1) })).toMatch(/row/);
    expect(checkPdProfile({ ...PROFILE, colocatedMs: [[1], [2], [3]] })).toMatch(/column/);
    expect(checkPdProfile({ ...PROFILE, outputBuckets: [] })).toMatch(/empty/);
  });

  it("looks up the covering bucket, clamped to the last", () => {
    expect(bucketIndex([128, 512, 2048], 0)).toBe(0);
    expect(bucketIndex([128, 512, 2048], 128)).toBe(0);
    expect(bucketIndex([128, 512, 2048], 129)).toBe(1);
    expect(bucketIndex([128, 512, 2048], 1e9)).toBe(2);
    expect(profileMs(PROFILE, "colocated", 600, 10)).toBe(1000);
    expect(profileMs(PROFILE, "pd", 600, 10)).toBe(600);
    expect(profileMs(PROFILE, "pd", 50_000, 50_000)).toBe(2900);
  });

  it("interpolates bilinearly between bucket bounds, clamped outside", () => {
    expect(profileMs(PROFILE, "colocated", 128, 32, "bilinear")).toBe(100);
    expect(profileMs(PROFILE, "colocated", 10, 10, "bilinear")).toBe(100);
    expect(profileMs(PROFILE, "colocated", 1e6, 1e6, "bilinear")).toBe(2600);
    // halfway along the input axis between rows 0 and 1, on column 0
    expect(profileMs(PROFILE, "colocated", 320, 32, "bilinear")).toBeCloseTo(200);
    // the centre of the first cell: mean of its four corners
    expect(profileMs(PROFILE, "pd", 320, 144, "bilinear")).toBeCloseTo((120 + 480 + 250 + 760) / 4);
  });
});

describe("choosePdGroup", () => {
  const groups = [
    { deploymentId: "coloc", mode: "colocated" as const, pressure: 0 },
    { deploymentId: "pd", mode: "pd" as const, pressure: 0 },
  ];

  it("picks the group the heatmap says is faster", () => {
    const longShort = choosePdGroup(groups, PROFILE, 1500, 20);
    expect(longShort).toMatchObject({ deploymentId: "pd", reason: "heatmap" });
    expect(longShort.costs.map((c) => c.expectedMs)).toEqual([1000, 600]);
    expect(choosePdGroup(groups, PROFILE, 100, 600).deploymentId).toBe("coloc");
    expect(choosePdGroup(groups, PROFILE, 1500, 900).deploymentId).toBe("coloc");
  });

  it("flips to the other group when the cheaper one is loaded", () => {
    const loaded = [groups[0]!, { ...groups[1]!, pressure: 8 }];
    const c = choosePdGroup(loaded, PROFILE, 1500, 20);
    // 600 x (1 + 0.1 x 8) = 1080 > 1000
    expect(c.deploymentId).toBe("coloc");
    expect(c.costs[1]!.adjustedMs).toBeCloseTo(1080);
    // and back when the colocated group is loaded too
    const both = [{ ...groups[0]!, pressure: 2 }, loaded[1]!];
    expect(choosePdGroup(both, PROFILE, 1500, 20).deploymentId).toBe("pd");
  });

  it("leans towards PD on ties and with a bias", () => {
    const tie: PdProfile = { ...PROFILE, pdMs: PROFILE.colocatedMs };
    expect(choosePdGroup(groups, tie, 100, 10).deploymentId).toBe("pd");
    const opts = { ...DEFAULT_PD_CHOICE, pdBias: 0.25 };
    // colocated 100 vs PD 120 / 1.25 = 96
    expect(choosePdGroup(groups, PROFILE, 100, 10).deploymentId).toBe("coloc");
    expect(choosePdGroup(groups, PROFILE, 100, 10, opts).deploymentId).toBe("pd");
  });

  it("takes the only group, or the least pressured without a heatmap to tell", () => {
    expect(choosePdGroup([groups[1]!], PROFILE, 100, 600)).toMatchObject({
      deploymentId: "pd",
      reason: "only-group",
    });
    const twoColoc = [
      { deploymentId: "a", mode: "colocated" as const, pressure: 3 },
      { deploymentId: "b", mode: "colocated" as const, pressure: 1 },
    ];
    expect(choosePdGroup(twoColoc, PROFILE, 100, 10)).toMatchObject({
      deploymentId: "b",
      reason: "one-mode",
    });
    const loaded = [{ ...groups[0]!, pressure: 1 }, groups[1]!];
    expect(choosePdGroup(loaded, null, 100, 600)).toMatchObject({
      deploymentId: "pd",
      reason: "no-profile",
    });
    const broken = { ...PROFILE, pdMs: [] };
    expect(choosePdGroup(loaded, broken, 100, 600).reason).toBe("no-profile");
    expect(() => choosePdGroup([], PROFILE, 1, 1)).toThrow();
  });

  it("goes by the default heatmap when none was measured, and a measured one wins", () => {
    // PD carries more load (pressure alone picks colocated); the default heatmap says PD is
    // three times faster at 2048 in / 32 out, the measured one says colocated is
    const busyPd = [groups[0]!, { ...groups[1]!, pressure: 2 }];
    const fallback = { ...PROFILE, pdMs: PROFILE.colocatedMs.map((r) => r.map((v) => v / 3)) };
    expect(choosePdGroup(busyPd, null, 2000, 30)).toMatchObject({
      deploymentId: "coloc",
      reason: "no-profile",
    });
    const byDefault = choosePdGroup(busyPd, null, 2000, 30, DEFAULT_PD_CHOICE, fallback);
    expect(byDefault).toMatchObject({ deploymentId: "pd", reason: "default-heatmap" });
    // the default heatmap's times, stretched by each group's pressure
    expect(byDefault.costs.map((c) => c.adjustedMs)).toEqual([1000, (1000 / 3) * 1.2]);
    const measured = { ...PROFILE, pdMs: PROFILE.colocatedMs.map((r) => r.map((v) => v * 2)) };
    expect(choosePdGroup(busyPd, measured, 2000, 30, DEFAULT_PD_CHOICE, fallback)).toMatchObject({
      deploymentId: "coloc",
      reason: "heatmap",
    });
    // an unusable measured profile falls back to the default one; an unusable default to none
    const broken = { ...PROFILE, pdMs: [] };
    const r = choosePdGroup(busyPd, broken, 2000, 30, DEFAULT_PD_CHOICE, fallback);
    expect(r.reason).toBe("default-heatmap");
    expect(choosePdGroup(busyPd, null, 2000, 30, DEFAULT_PD_CHOICE, broken).reason).toBe(
      "no-profile",
    );
    // one group, or one mode: the heatmap has nothing to choose between
    expect(choosePdGroup([groups[1]!], null, 2000, 30, DEFAULT_PD_CHOICE, fallback).reason).toBe(
      "only-group",
    );
  });
});

describe("OutputLengthPredictor", () => {
  it("starts from the default, capped by max tokens", () => {
    const p = new OutputLengthPredictor("tiny");
    expect(p.predict(100, 1000)).toBe(128);
    expect(p.predict(100, 50)).toBe(50);
  });

  it("uses the median of similar prompt lengths, then of everything", () => {
    const p = new OutputLengthPredictor("tiny", {
      capacity: 64,
      defaultOutputTokens: 128,
      minSamples: 3,
      similarFactor: 2,
    });
    for (const out of [10, 20, 30, 1000]) p.observe(100, out);
    for (const out of [400, 500, 600]) p.observe(2000, out);
    expect(p.predict(120, 4096)).toBe(25); // median of 10, 20, 30, 1000
    expect(p.predict(1500, 4096)).toBe(500);
    expect(p.predict(1500, 300)).toBe(300);
    // no similar prompts (600 is more than 2x from both): median of all seven
    expect(p.predict(600, 4096)).toBe(400);
  });

  it("forgets beyond its capacity and round-trips through JSON", () => {
    const rng = mulberry32(5);
    const opts = { capacity: 8, defaultOutputTokens: 64, minSamples: 2, similarFactor: 1.5 };
    const p = new OutputLengthPredictor("tiny", opts);
    for (let i = 0; i < 20; i++) p.observe(100, 1000 + i);
    expect(p.numSamples).toBe(8);
    expect(p.predict(100, 1e6)).toBe(Math.round((1015 + 1016) / 2)); // the last 8: 1012..1019
    const json = p.toJSON();
    expect(json.history.map((h) => h[1])).toEqual([1012, 1013, 1014, 1015, 1016, 1017, 1018, 1019]);
    const copy = OutputLengthPredictor.fromJSON(JSON.parse(JSON.stringify(json)));
    expect(copy.toJSON()).toEqual(json);
    for (let i = 0; i < 30; i++) {
      const prompt = 1 + Math.floor(rng() * 3000);
      const out = 1 + Math.floor(rng() * 500);
      p.observe(prompt, out);
      copy.observe(prompt, out);
      const q = 1 + Math.floor(rng() * 3000);
      expect(copy.predict(q, 400)).toBe(p.predict(q, 400));
    }
    expect(copy.toJSON()).toEqual(p.toJSON());
  });
});
