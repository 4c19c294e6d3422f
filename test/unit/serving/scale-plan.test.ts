/**
 * The scale-up rules: fork tree broadcast, load sources per path, the arena of a model, which
 * instances a role starts or drains, the serving list's creation order, fork sources and a new
 * target's scaledAt.
 */
import { describe, expect, it } from "vitest";
import { newDeployment } from "../../../shared/serving/deployments.ts";
import {
  arenaBytes,
  forkParents,
  forkSources,
  inCreationOrder,
  planSources,
  reservedInstance,
  roleMove,
  withTarget,
} from "../../../shared/serving/scale-plan.ts";
import type { DeploymentRecord } from "../../../shared/types/deployments.ts";

describe("forkParents", () => {
  it("doubles the holders each wave from one source", () => {
    // node 0 is the source; targets are nodes 1..7
    expect(forkParents(1, 7)).toEqual([0, 0, 1, 0, 1, 2, 3]);
  });

  it("spreads the first wave over several sources", () => {
    // nodes 0..2 are sources; targets 3..8: wave 0 copies from 0,1,2; wave 1 from 0..5
    expect(forkParents(3, 6)).toEqual([0, 1, 2, 0, 1, 2]);
  });

  it("roots the tree at the first target when there is no source", () => {
    expect(forkParents(0, 4)).toEqual([null, 0, 0, 1]);
  });

  it("has each holder send once per wave: 64 targets from one source take 7 waves", () => {
    const parents = forkParents(1, 64);
    // a node's wave: after its parent's; each sender copies at most once per wave
    const wave = [0];
    const sent = new Map<string, number>();
    parents.forEach((p, t) => {
      const parent = p as number;
      const busy = sent.get(String(parent)) ?? (wave[parent] as number);
      const w = Math.max(busy, wave[parent] as number) + 1;
      wave[t + 1] = w;
      sent.set(String(parent), w);
    });
    expect(Math.max(...wave)).toBe(7); // 65 holders: ceil(log2 65)
  });
});

describe("planSources", () => {
  it("loads every instance from the forced tier", () => {
    expect(planSources("r2", ["a"], ["x", "y"], false)).toEqual([
      { source: { tier: "r2" }, after: null },
      { source: { tier: "r2" }, after: null },
    ]);
    expect(planSources("staged", [], ["x"], true)[0]?.source).toEqual({ tier: "staged" });
  });

  it("forks from serving peers, and from new instances once they have their weights", () => {
    expect(planSources("auto", ["a"], ["x", "y", "z"], false)).toEqual([
      { source: { tier: "fork", fromInstanceId: "a" }, after: null },
      { source: { tier: "fork", fromInstanceId: "a" }, after: null },
      { source: { tier: "fork", fromInstanceId: "x" }, after: "x" },
    ]);
  });

  it("loads the root from the staged tier when staged, else from R2, with no peer", () => {
    const staged = planSources("fork", [], ["x", "y"], true);
    expect(staged[0]).toEqual({ source: { tier: "staged" }, after: null });
    expect(staged[1]).toEqual({ source: { tier: "fork", fromInstanceId: "x" }, after: "x" });
    expect(planSources("auto", [], ["x"], false)[0]?.source).toEqual({ tier: "r2" });
  });
});

describe("arenaBytes", () => {
  const parts = {
    weightBytes: 3_000_000,
    workspaceBytes: 1_000_000,
    kvBytesPerBlock: 16_000,
    blocksPerSeq: 128,
    maxBlocks: 4096,
  };
  const slack = 64 * 1024;

  it("is weights + workspace + the KV share, in whole blocks", () => {
    expect(arenaBytes(parts, 8_000_000, 96 * 2 ** 20)).toBe(4_000_000 + 500 * 16_000 + slack);
  });

  it("holds at least one full-length sequence and at most what the instance can use", () => {
    expect(arenaBytes(parts, 0, 96 * 2 ** 20)).toBe(4_000_000 + 128 * 16_000 + slack);
    expect(arenaBytes(parts, 2 ** 30, 2 ** 31)).toBe(4_000_000 + 4096 * 16_000 + slack);
  });

  it("never exceeds the NPU budget", () => {
    expect(arenaBytes(parts, 2 ** 30, 10_000_000)).toBe(10_000_000);
  });
});

describe("roleMove", () => {
  const live = [
    { id: "a", role: "decode", state: "serving" },
    { id: "b", role: "decode", state: "loading" },
    { id: "c", role: "decode", state: "serving" },
    { id: "d", role: "decode", state: "draining" },
    { id: "e", role: "prefill", state: "serving" },
  ];

  it("starts the missing instances, not counting draining ones or other roles", () => {
    expect(roleMove(live, "decode", 5)).toEqual({ start: 2, drain: [] });
  });

  it("drains serving instances newest first, never starting ones", () => {
    expect(roleMove(live, "decode", 1).drain.map((s) => s.id)).toEqual(["c", "a"]);
    expect(roleMove(live, "decode", 2).drain.map((s) => s.id)).toEqual(["c"]);
    expect(roleMove(live, "prefill", 1)).toEqual({ start: 0, drain: [] });
  });
});

describe("inCreationOrder", () => {
  it("sorts ids by their place in the creation order", () => {
    expect(inCreationOrder(["c", "a", "b"], ["a", "b", "c"])).toEqual(["a", "b", "c"]);
  });
});

const dep = (id: string, model: string, generation: number): DeploymentRecord =>
  newDeployment(
    {
      id,
      model,
      mode: "colocated",
      scheduler: "deepflow",
      counts: { colocated: 1, prefill: 0, decode: 0 },
    },
    generation,
    1000,
  );

describe("forkSources", () => {
  it("keeps serving instances of active deployments of the same model and generation", () => {
    const deps = new Map([
      ["a", dep("a", "m", 1)],
      ["b", dep("b", "m", 0)], // an older generation
      ["c", { ...dep("c", "m", 1), status: "deleted" as const }],
      ["d", dep("d", "other", 1)],
    ]);
    const inst = (id: string, depId: string) =>
      reservedInstance(
        { id, fromPool: false, reserveMs: 0 },
        depId,
        "colocated",
        { tier: "r2" },
        0,
      );
    const serving = ["a", "b", "c", "d", "gone"].map((x) => inst(`i-${x}`, x));
    const sources = forkSources(serving, (id) => deps.get(id) ?? null, dep("e", "m", 1));
    expect(sources).toEqual(["i-a"]);
  });
});

describe("withTarget", () => {
  it("moves scaledAt only when the target changes", () => {
    const d = dep("a", "m", 0);
    const same = withTarget(d, { colocated: 1, prefill: 0, decode: 0 }, 5000);
    expect(same.scaling.scaledAt).toBe(1000);
    const up = withTarget(d, { colocated: 3, prefill: 0, decode: 0 }, 5000);
    expect(up.scaling).toMatchObject({ scaledAt: 5000, target: { colocated: 3 } });
  });
});
