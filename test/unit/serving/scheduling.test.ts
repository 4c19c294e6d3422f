/** Load, balance, the within-group step, the baselines and the whole of Algorithm 1. */

import { describe, expect, it } from "vitest";
import { GREEDY, newSequence, outstandingTokens } from "../../../shared/engine/sequence.ts";
import { OutputLengthPredictor, type PdProfile } from "../../../shared/serving/pd-profile.ts";
import { PrefixTree, promptBlockKeys } from "../../../shared/serving/prefix-tree.ts";
import {
  chooseByPrefix,
  chooseInGroup,
  chooseLeastLoaded,
  chooseRoundRobin,
  DEFAULT_BALANCE,
  type DeploymentState,
  type InstanceSnapshot,
  type InstanceState,
  instanceLoad,
  isBalanced,
  loadMetric,
  placementCost,
  roundRobin,
  type ScheduleInput,
  scheduleRequest,
} from "../../../shared/serving/scheduling.ts";

const BS = 4;
const SHAPE = { numPromptTokens: 100, blockSize: BS };

function snap(instanceId: string, numRunning: number, extra: Partial<InstanceSnapshot> = {}) {
  return { instanceId, numRunning, numWaiting: 0, numFreeBlocks: 10, ...extra };
}

function tokens(instanceId: string, numOutstandingTokens: number): InstanceSnapshot {
  return snap(instanceId, 1, { numOutstandingTokens });
}

/** PD wins for long prompts with short outputs, colocated otherwise. */
const PROFILE: PdProfile = {
  model: "tiny",
  measuredAt: 0,
  inputBuckets: [128, 2048],
  outputBuckets: [32, 1024],
  colocatedMs: [
    [100, 1000],
    [1000, 2000],
  ],
  pdMs: [
    [130, 1300],
    [600, 2400],
  ],
};

describe("load and balance", () => {
  it("counts outstanding tokens: prompt not yet computed plus decode still to come", () => {
    const a = newSequence("a", [1, 2, 3, 4, 5, 6], { ...GREEDY, maxTokens: 10 });
    const b = newSequence("b", [1, 2, 3], { ...GREEDY, maxTokens: 4 });
    a.numComputedTokens = 2;
    b.numComputedTokens = 3;
    b.tokenIds.push(7, 8); // two generated
    expect(outstandingTokens([a, b])).toBe(4 + 10 + 0 + 2);
    expect(outstandingTokens([a, b], 3)).toBe(4 + 3 + 0 + 2);
  });

  it("uses tokens when every snapshot has them, sequences otherwise", () => {
    expect(instanceLoad(snap("x", 2, { numWaiting: 3 }))).toBe(5);
    expect(instanceLoad(tokens("x", 700))).toBe(700);
    expect(instanceLoad(tokens("x", 700), "seqs")).toBe(1);
    expect(loadMetric([tokens("a", 1), tokens("b", 2)])).toBe("tokens");
    expect(loadMetric([tokens("a", 1), snap("b", 2)])).toBe("seqs");
  });

  it("calls a group balanced when the spread is within max(absolute, relative x mean)", () => {
    expect(isBalanced([])).toBe(true);
    expect(isBalanced([snap("a", 40)])).toBe(true);
    expect(isBalanced([snap("a", 3), snap("b", 5)])).toBe(true); // spread 2 = absolute floor
    expect(isBalanced([snap("a", 0), snap("b", 3)])).toBe(false);
    expect(isBalanced([snap("a", 20), snap("b", 24)])).toBe(true); // 4 <= 0.2 x 22
    expect(isBalanced([snap("a", 20), snap("b", 26)])).toBe(false);
    expect(isBalanced([tokens("a", 0), tokens("b", 500)])).toBe(true);
    expect(isBalanced([tokens("a", 0), tokens("b", 600)])).toBe(false);
    expect(isBalanced([tokens("a", 10_000), tokens("b", 11_500)])).toBe(true);
    expect(isBalanced([tokens("a", 10_000), tokens("b", 13_000)])).toBe(false);
    const strict = { relative: 0, absoluteSeqs: 0, absoluteTokens: 0 };
    expect(isBalanced([snap("a", 3), snap("b", 4)], strict)).toBe(false);
  });
});

describe("within-group choice", () => {
  it("follows the longest prefix when the group is balanced", () => {
    const group = [snap("a", 2), snap("b", 3), snap("c", 2)];
    const c = chooseInGroup(group, new Map([["b", 5]]), SHAPE);
    expect(c).toMatchObject({ instanceId: "b", reason: "prefix", balanced: true, metric: "seqs" });
    expect(c.scores).toEqual([
      { instanceId: "a", load: 2, numMatchedBlocks: 0 },
      { instanceId: "b", load: 3, numMatchedBlocks: 5 },
      { instanceId: "c", load: 2, numMatchedBlocks: 0 },
    ]);
    // equal matches: least load, then first listed
    expect(
      chooseInGroup(
        group,
        new Map([
          ["a", 4],
          ["b", 4],
          ["c", 4],
        ]),
        SHAPE,
      ).instanceId,
    ).toBe("a");
    const tied = [snap("a", 3), snap("b", 2), snap("c", 2)];
    expect(
      chooseInGroup(
        tied,
        new Map([
          ["a", 4],
          ["b", 4],
          ["c", 4],
        ]),
        SHAPE,
      ).instanceId,
    ).toBe("b");
  });

  it("goes to the least-loaded instance when the group is unbalanced", () => {
    const group = [snap("a", 9), snap("b", 1), snap("c", 4)];
    const c = chooseInGroup(group, new Map([["a", 8]]), SHAPE);
    expect(c).toMatchObject({ instanceId: "b", reason: "least-loaded", balanced: false });
  });

  it("says least-loaded when nothing matches, and breaks load ties by free blocks", () => {
    const group = [snap("a", 2), snap("b", 1, { numFreeBlocks: 3 }), snap("c", 1)];
    expect(chooseInGroup(group, new Map(), SHAPE)).toMatchObject({
      instanceId: "c",
      reason: "least-loaded",
      balanced: true,
    });
    expect(chooseLeastLoaded(group).instanceId).toBe("c");
    expect(chooseLeastLoaded(group, new Map([["b", 1]])).instanceId).toBe("b");
    expect(() => chooseInGroup([], new Map(), SHAPE)).toThrow();
  });

  it("in tokens, prices a cached prefix at the prefill it saves (placementCost)", () => {
    const prompt = { numPromptTokens: 1000, blockSize: 100 };
    // one sequence on each. a: 1000 queued, 8 blocks (800 tokens) cached -> 1000 + 200 + 0.1 x
    // 200 x 1; b: nothing queued or cached -> 1000 + 0.1 x 1000 x 1
    const far = chooseInGroup([tokens("a", 1000), tokens("b", 0)], new Map([["a", 8]]), prompt);
    expect(far).toMatchObject({ instanceId: "b", reason: "least-loaded", balanced: false });
    expect(far.scores.map((x) => x.cost)).toEqual([1220, 1100]);
    // with 100 queued, a costs 320: the prefix outweighs the load (the paper's test says unbalanced)
    const near = chooseInGroup([tokens("a", 100), tokens("b", 0)], new Map([["a", 8]]), prompt);
    expect(near).toMatchObject({ instanceId: "a", reason: "prefix", balanced: true });
    const mid = chooseInGroup([tokens("a", 700), tokens("b", 0)], new Map([["a", 8]]), prompt);
    expect(mid).toMatchObject({ instanceId: "a", reason: "prefix", balanced: false });
    // equal cost: more matched blocks; a fully cached prompt still computes one token
    expect(placementCost(0, 10, prompt)).toBe(1);
    expect(placementCost(5, 0, prompt)).toBe(1005);
    const idle = (id: string, load: number) => snap(id, 0, { numOutstandingTokens: load });
    const tie = chooseInGroup([idle("a", 0), idle("b", 200)], new Map([["b", 2]]), prompt);
    expect(tie.scores.map((x) => x.cost)).toEqual([1000, 1000]);
    expect(tie.instanceId).toBe("b");
  });

  it("in tokens, charges an uncached prefill for the sequences it would stall (interference)", () => {
    const prompt = { numPromptTokens: 10_000, blockSize: 100 };
    const busy = (id: string, seqs: number, load: number) =>
      snap(id, seqs, { numOutstandingTokens: load });
    // a: 2000 tokens owed by 20 decoding sequences; b: 6000 owed by one long prefill
    const group = [busy("a", 20, 2000), busy("b", 1, 6000)];
    const c = chooseInGroup(group, new Map(), prompt);
    // a: 2000 + 10000 + 0.1 x 10000 x 20 = 32000; b: 6000 + 10000 + 0.1 x 10000 = 17000
    expect(c.scores.map((x) => x.cost)).toEqual([32_000, 17_000]);
    expect(c.instanceId).toBe("b");
    // least-loaded (and the rule without interference) would stall a's twenty sequences
    expect(chooseInGroup(group, new Map(), prompt, DEFAULT_BALANCE, 0).instanceId).toBe("a");
    expect(chooseLeastLoaded(group).instanceId).toBe("a");
    // a short prompt costs its neighbours little: load decides
    const short = chooseInGroup(group, new Map(), { numPromptTokens: 50, blockSize: 100 });
    expect(short.instanceId).toBe("a");
    // a cached prompt computes one token: almost nothing to interfere with
    expect(placementCost(0, 100, prompt, 20)).toBeCloseTo(1 + 0.1 * 20, 9);
    expect(placementCost(0, 0, prompt, 20, 0)).toBe(10_000);
  });

  it("locality-only follows the longest prefix whatever the load", () => {
    const c = chooseByPrefix([tokens("a", 90_000), tokens("b", 0)], new Map([["a", 1]]));
    expect(c).toMatchObject({ instanceId: "a", reason: "prefix", balanced: null });
    expect(chooseByPrefix([tokens("a", 9), tokens("b", 3)], new Map()).instanceId).toBe("b");
  });

  it("cycles round robin with a counter the caller keeps", () => {
    expect(roundRobin(3, 0)).toEqual({ index: 0, next: 1 });
    expect(roundRobin(3, 7)).toEqual({ index: 1, next: 8 });
    expect(roundRobin(3, -4)).toEqual({ index: 0, next: 1 });
    const group = [snap("a", 9), snap("b", 0), snap("c", 4)];
    const picked: string[] = [];
    let counter = 0;
    for (let i = 0; i < 6; i++) {
      const r = chooseRoundRobin(group, counter);
      picked.push(r.choice.instanceId);
      expect(r.choice.reason).toBe("round-robin");
      counter = r.next;
    }
    expect(picked).toEqual(["a", "b", "c", "a", "b", "c"]);
  });
});

function inst(instanceId: string, role: InstanceState["role"], numRunning = 0): InstanceState {
  return { ...snap(instanceId, numRunning), role };
}

function deployments(policy: DeploymentState["policy"]): DeploymentState[] {
  return [
    {
      deploymentId: "dep_coloc",
      mode: "colocated",
      policy,
      instances: [inst("c1", "colocated"), inst("c2", "colocated")],
    },
    {
      deploymentId: "dep_pd",
      mode: "pd",
      policy,
      instances: [inst("p1", "prefill"), inst("p2", "prefill"), inst("d1", "decode", 1)],
    },
  ];
}

function request(deps: DeploymentState[], over: Partial<ScheduleInput> = {}): ScheduleInput {
  return {
    deployments: deps,
    blockKeys: [],
    blockSize: BS,
    numPromptTokens: 1500,
    maxTokens: 16,
    prefixTree: null,
    predictor: null,
    profile: PROFILE,
    counters: {},
    ...over,
  };
}

describe("scheduleRequest", () => {
  it("sends a long prompt with a short output to PD, prefill by prefix, decode by load", () => {
    const tree = new PrefixTree();
    const prompt = Array.from({ length: 1500 }, (_, i) => i % 97);
    const keys = promptBlockKeys(prompt, BS);
    tree.insert("p2", keys.slice(0, 100), 1);
    const deps = deployments("deepflow");
    (deps[1]!.instances as InstanceState[]).push(inst("d2", "decode", 0));
    const r = scheduleRequest(request(deps, { blockKeys: keys, prefixTree: tree }))!;
    expect(r.decision).toMatchObject({
      deploymentId: "dep_pd",
      mode: "pd",
      instanceId: null,
      prefillInstanceId: "p2",
      decodeInstanceId: "d2",
      groupReason: "heatmap",
      reason: "prefix",
      balanced: true,
      numPromptBlocks: keys.length,
      predictedOutputTokens: 16,
    });
    expect(r.decision.scores.find((s) => s.instanceId === "p2")!.numMatchedBlocks).toBe(100);
    expect(r.decision.decodeScores.map((s) => s.instanceId)).toEqual(["d1", "d2"]);
    // one plain object: survives a JSON line unchanged
    expect(JSON.parse(JSON.stringify(r.decision))).toEqual(r.decision);
  });

  it("flips to colocated when the PD group is loaded or the output is predicted long", () => {
    const deps = deployments("deepflow");
    const busy = deps.map((d) =>
      d.mode === "pd"
        ? { ...d, instances: d.instances.map((i) => ({ ...i, numRunning: 6, numWaiting: 2 })) }
        : d,
    );
    const r = scheduleRequest(request(busy))!;
    expect(r.decision).toMatchObject({ deploymentId: "dep_coloc", groupReason: "heatmap" });
    expect(r.decision.instanceId).toBe("c1");
    expect(r.decision.groups.map((g) => g.pressure)).toEqual([0, 8]);

    const predictor = new OutputLengthPredictor("tiny");
    for (let i = 0; i < 8; i++) predictor.observe(1400, 900);
    const long = scheduleRequest(request(deps, { predictor, maxTokens: 2000 }))!;
    expect(long.decision).toMatchObject({ deploymentId: "dep_coloc", predictedOutputTokens: 900 });
    // the same history, but max tokens caps the prediction: PD again
    const capped = scheduleRequest(request(deps, { predictor, maxTokens: 20 }))!;
    expect(capped.decision).toMatchObject({ deploymentId: "dep_pd", predictedOutputTokens: 20 });
  });

  it("keeps a shared prefix on one colocated instance until the group is unbalanced", () => {
    const tree = new PrefixTree();
    const system = Array.from({ length: 64 }, (_, i) => i);
    const loads = new Map([
      ["c1", 0],
      ["c2", 0],
      ["c3", 0],
    ]);
    const chosen: string[] = [];
    for (let i = 0; i < 6; i++) {
      const keys = promptBlockKeys([...system, i, i, i, i], BS);
      const dep: DeploymentState = {
        deploymentId: "dep_coloc",
        mode: "colocated",
        policy: "deepflow",
        instances: [...loads].map(([id, n]) => inst(id, "colocated", n)),
      };
      const r = scheduleRequest(
        request([dep], { blockKeys: keys, prefixTree: tree, numPromptTokens: 68 }),
      )!;
      const id = r.decision.instanceId!;
      chosen.push(`${id}:${r.decision.reason}`);
      expect(r.decision.groupReason).toBe("only-group");
      tree.insert(id, keys, i);
      loads.set(id, (loads.get(id) ?? 0) + 1);
    }
    // the first request finds no cache; then locality until c1 is 3 ahead (absolute floor 2);
    // once everyone holds the shared prefix, equal matches go to the least loaded
    expect(chosen).toEqual([
      "c1:least-loaded",
      "c1:prefix",
      "c1:prefix",
      "c2:least-loaded",
      "c3:least-loaded",
      "c2:prefix",
    ]);
  });

  it("runs the round-robin baseline over every entry instance of every deployment", () => {
    const deps = deployments("round-robin");
    let counters = {};
    const picked: string[] = [];
    for (let i = 0; i < 8; i++) {
      const input = request(deps, { counters });
      const r = scheduleRequest(input)!;
      expect(input.counters).toBe(counters); // not mutated
      const d = r.decision;
      picked.push(d.instanceId ?? `${d.prefillInstanceId}>${d.decodeInstanceId}`);
      expect(d.groupReason).toBe("baseline");
      expect(d.reason).toBe("round-robin");
      counters = r.counters;
    }
    expect(picked).toEqual(["c1", "c2", "p1>d1", "p2>d1", "c1", "c2", "p1>d1", "p2>d1"]);
    expect(counters).toEqual({ "*": 8, "dep_pd/decode": 4 });
  });

  it("runs the least-loaded baseline across deployments", () => {
    const deps = deployments("least-loaded");
    const busy: DeploymentState[] = [
      { ...deps[0]!, instances: [inst("c1", "colocated", 3), inst("c2", "colocated", 2)] },
      { ...deps[1]!, instances: [inst("p1", "prefill", 4), inst("p2", "prefill", 1)] },
    ];
    (busy[1]!.instances as InstanceState[]).push(inst("d1", "decode", 9), inst("d2", "decode", 5));
    const r = scheduleRequest(request(busy))!;
    expect(r.decision).toMatchObject({
      deploymentId: "dep_pd",
      prefillInstanceId: "p2",
      decodeInstanceId: "d2",
      reason: "least-loaded",
      groupReason: "baseline",
    });
    expect(r.decision.scores.map((s) => s.instanceId)).toEqual(["c1", "c2", "p1", "p2"]);
  });

  it("uses the PD step and then each deployment's own policy when policies differ", () => {
    const deps = deployments("deepflow");
    const mixed = [{ ...deps[0]!, policy: "round-robin" as const }, deps[1]!];
    const r = scheduleRequest(request(mixed, { numPromptTokens: 50 }))!;
    expect(r.decision).toMatchObject({
      deploymentId: "dep_coloc",
      instanceId: "c1",
      reason: "round-robin",
      groupReason: "heatmap",
    });
    expect(r.counters).toEqual({ dep_coloc: 1 });
  });

  it("runs the ablations: pd-aware-only takes the PD step then least load, locality-only no PD step", () => {
    const tree = new PrefixTree();
    const prompt = Array.from({ length: 1500 }, (_, i) => i % 97);
    const keys = promptBlockKeys(prompt, BS);
    tree.insert("p2", keys.slice(0, 100), 1);
    tree.insert("c2", keys.slice(0, 200), 1);
    const pdDeps = deployments("pd-aware-only");
    const pdInstances = pdDeps[1]!.instances as InstanceState[];
    pdInstances[pdInstances.findIndex((i) => i.instanceId === "p2")] = inst("p2", "prefill", 1);
    const pdOnly = scheduleRequest(request(pdDeps, { blockKeys: keys, prefixTree: tree }))!;
    // the heatmap sends this prompt to PD; within it the least loaded, p1, not p2's prefix
    expect(pdOnly.decision).toMatchObject({
      deploymentId: "dep_pd",
      prefillInstanceId: "p1",
      groupReason: "heatmap",
      reason: "least-loaded",
    });
    const local = scheduleRequest(
      request(deployments("locality-only"), { blockKeys: keys, prefixTree: tree }),
    )!;
    // no PD step: the longest prefix across both deployments, although the heatmap prefers PD
    expect(local.decision).toMatchObject({
      deploymentId: "dep_coloc",
      instanceId: "c2",
      groupReason: "baseline",
      reason: "prefix",
    });
  });

  it("goes by the default heatmap for a model nobody profiled; a measured profile wins", () => {
    const deps = deployments("deepflow"); // the PD group carries a decode: more pressure
    const none = scheduleRequest(request(deps, { profile: null }))!;
    expect(none.decision).toMatchObject({ deploymentId: "dep_coloc", groupReason: "no-profile" });
    const byDefault = scheduleRequest(request(deps, { profile: null, defaultProfile: PROFILE }))!;
    expect(byDefault.decision).toMatchObject({
      deploymentId: "dep_pd",
      groupReason: "default-heatmap",
      prefillInstanceId: "p1",
      decodeInstanceId: "d1",
    });
    expect(byDefault.decision.groups.map((g) => g.expectedMs)).toEqual([1000, 600]);
    const colocFaster = { ...PROFILE, pdMs: PROFILE.colocatedMs.map((r) => r.map((v) => v * 2)) };
    const measured = scheduleRequest(
      request(deps, { profile: colocFaster, defaultProfile: PROFILE }),
    )!;
    expect(measured.decision).toMatchObject({ deploymentId: "dep_coloc", groupReason: "heatmap" });
  });

  it("skips deployments that cannot serve and returns null when none can", () => {
    const noDecode: DeploymentState = {
      deploymentId: "dep_pd",
      mode: "pd",
      policy: "deepflow",
      instances: [inst("p1", "prefill")],
    };
    const coloc = deployments("deepflow")[0]!;
    const r = scheduleRequest(request([noDecode, coloc]))!;
    expect(r.decision).toMatchObject({ deploymentId: "dep_coloc", groupReason: "only-group" });
    expect(scheduleRequest(request([noDecode]))).toBeNull();
    expect(scheduleRequest(request([]))).toBeNull();
  });
});
