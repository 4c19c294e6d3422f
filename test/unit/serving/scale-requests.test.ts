/** The checks on a scale request: a hand-set target's bounds, and scale from zero's target. */
import { describe, expect, it } from "vitest";
import { newDeployment } from "../../../shared/serving/deployments.ts";
import { checkBounds, fromZeroTarget } from "../../../shared/serving/scale-requests.ts";

const dep = newDeployment(
  {
    id: "d1",
    model: "m",
    mode: "pd",
    scheduler: "deepflow",
    counts: { colocated: 0, prefill: 1, decode: 0 },
    min: { colocated: 0, prefill: 0, decode: 0 },
    max: { colocated: 0, prefill: 4, decode: 2 },
  },
  0,
  1000,
);

describe("checkBounds", () => {
  it("accepts a target within [min, max] for every role", () => {
    const t = { colocated: 0, prefill: 4, decode: 2 };
    expect(checkBounds(dep, t)).toEqual({ ok: true, value: t });
  });

  it("refuses the first role outside its bounds, naming it", () => {
    const r = checkBounds(dep, { colocated: 0, prefill: 5, decode: 3 });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.kind).toBe("invalid_request");
    expect(r.error.param).toBe("prefill");
    expect(r.error.message).toBe("prefill: 5 is outside this deployment's bounds [0, 4]");
  });
});

describe("fromZeroTarget", () => {
  it("raises each requested role without a live instance to one", () => {
    const r = fromZeroTarget(dep, ["prefill", "decode"], () => false);
    expect(r).toEqual({ ok: true, value: { colocated: 0, prefill: 1, decode: 1 } });
  });

  it("leaves roles with a live instance at their target", () => {
    const r = fromZeroTarget(dep, ["decode"], (role) => role === "decode");
    expect(r).toEqual({ ok: true, value: { colocated: 0, prefill: 1, decode: 0 } });
  });

  it("is overloaded when a role to raise has a maximum of zero", () => {
    const r = fromZeroTarget(dep, ["colocated"], () => false);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.error.kind).toBe("overloaded");
    expect(r.error.code).toBe("deployment_at_max");
  });

  it("does not mind a zero maximum on a role that already serves", () => {
    const r = fromZeroTarget(dep, ["colocated"], () => true);
    expect(r.ok).toBe(true);
  });
});
