/**
 * A PD deployment's prefill and decode groups scale separately, under load, with no failed or
 * duplicated request: by the scale API (one role, then the other, then both back in), and by the
 * autoscaler (its tick driven here, its own alarm cancelled), where SLO misses of one role's
 * objective scale that role alone: TTFT is the prefill group's, TPOT the decode group's.
 */
import { runInDurableObject } from "cloudflare:test";
import { describe, expect, it, vi } from "vitest";
import type { ClusterManager } from "../../durable-objects/cluster-manager.ts";
import { lemmaProblem } from "../../shared/eval/lemma-chain.ts";
import type { ScaleDecision } from "../../shared/serving/autoscaler.ts";
import { MAX_SLO_TPOT_MS, MAX_SLO_TTFT_MS } from "../../shared/types/instances.ts";
import {
  cluster,
  complete,
  create,
  deployment,
  ended,
  lastTaskEndedAt,
} from "./scaling-helpers.ts";
import { admin } from "./worker-client.ts";

/**
 * A long prompt in the lemma model's vocabulary (one token a character): lemma problem `i`'s
 * prompt four times over, 292 characters, within its context of 512 with 16 tokens to generate.
 */
const long = (i: number) => lemmaProblem(6, i).prompt.repeat(4);

/** Waits until the deployment's live instances are `prefill` and `decode`, all serving. */
async function servingPd(id: string, prefill: number, decode: number) {
  await vi.waitUntil(
    async () => {
      const d = await deployment(id);
      const n = (role: string) => d.instances.filter((i) => i.role === role).length;
      return (
        n("prefill") === prefill &&
        n("decode") === decode &&
        d.instances.every((i) => i.state === "serving")
      );
    },
    { timeout: 30_000, interval: 20 },
  );
}

async function scale(id: string, prefill: number, decode: number): Promise<void> {
  const res = await admin(`/api/deployments/${id}/scale`, {
    method: "POST",
    body: JSON.stringify({ prefill, decode }),
  });
  expect(res.status).toBe(200);
}

/** Every request answered, each once: one job of one prefill and one decode task, succeeded. */
async function allServedOnce(results: Awaited<ReturnType<typeof complete>>[]): Promise<void> {
  for (const r of results) expect(r.status).toBe(200);
  expect(new Set(results.map((r) => r.id)).size).toBe(results.length);
  for (const rec of await Promise.all(results.map((r) => ended(r.id)))) {
    expect(rec.status).toBe("succeeded");
    expect(rec.jobs).toHaveLength(1);
    const tasks = rec.jobs[0]?.tasks ?? [];
    expect(tasks.map((t) => t.role).sort()).toEqual(["decode", "prefill"]);
    for (const t of tasks) expect(t.status).toBe("succeeded");
  }
}

describe("PD scaling", () => {
  it("scales prefill and decode separately by the scale API under load", async () => {
    const d = await create({
      mode: "pd",
      instances: { prefill: 1, decode: 1 },
      min_instances: { prefill: 1, decode: 1 },
      max_instances: { prefill: 3, decode: 3 },
    });
    await servingPd(d.id, 1, 1);
    const prompts = Array.from({ length: 8 }, (_, i) => `Once upon a time there was fox ${i}.`);
    const first = prompts.map((p) => complete(d.id, p, 12));
    await scale(d.id, 3, 1); // prefill only
    await servingPd(d.id, 3, 1);
    const second = prompts.map((p) => complete(d.id, p, 12));
    await scale(d.id, 3, 3); // decode only
    await servingPd(d.id, 3, 3);
    const third = prompts.map((p) => complete(d.id, p, 12));
    await scale(d.id, 1, 2); // both in, by different amounts, while the third wave runs
    const results = await Promise.all([...first, ...second, ...third]);
    await allServedOnce(results);
    // the same greedy prompt gives the same text whichever instances served it
    for (let w = 1; w < 3; w++) {
      prompts.forEach((_, i) => {
        const text = results[w * prompts.length + i]?.body.choices?.[0]?.text;
        expect(text).toBe(results[i]?.body.choices?.[0]?.text);
      });
    }
    await servingPd(d.id, 1, 2);
  });

  it("autoscales the group whose SLO is missed, the other holds", async () => {
    const bounds = {
      mode: "pd",
      instances: { prefill: 1, decode: 1 },
      min_instances: { prefill: 1, decode: 1 },
      max_instances: { prefill: 2, decode: 2 },
    };
    // prefill answers for TTFT, decode for TPOT: each deployment can only miss one of them
    const ttft = await create({ ...bounds, slo: { ttft_ms: 1, tpot_ms: MAX_SLO_TPOT_MS } });
    const tpot = await create({ ...bounds, slo: { ttft_ms: MAX_SLO_TTFT_MS, tpot_ms: 1 } });
    await servingPd(ttft.id, 1, 1);
    await servingPd(tpot.id, 1, 1);
    const cm = cluster();
    await runInDurableObject(cm, (_c: ClusterManager, state) => state.storage.deleteAlarm());
    const wave = () =>
      [ttft, tpot].flatMap((d) => Array.from({ length: 5 }, (_, i) => complete(d.id, long(i), 16)));
    const first = await Promise.all(wave());
    // the tick runs as the first deployment's wave ends (its clock driven), while a second wave
    // runs
    const at = Math.min(await lastTaskEndedAt(ttft.id), await lastTaskEndedAt(tpot.id)) + 1;
    const second = wave();
    const decisions = await runInDurableObject(cm, (c: ClusterManager) => c.autoscaler.tick(at));
    const of = (id: string, role: string): ScaleDecision | undefined =>
      decisions.find((x) => x.deploymentId === id && x.role === role)?.decision;
    expect(of(ttft.id, "prefill")).toEqual({ target: 2, reason: "slo" });
    expect(of(ttft.id, "decode")?.target).toBe(1);
    expect(of(tpot.id, "prefill")?.target).toBe(1);
    expect(of(tpot.id, "decode")).toEqual({ target: 2, reason: "slo" });
    await allServedOnce([...first, ...(await Promise.all(second))]);
    await servingPd(ttft.id, 2, 1);
    await servingPd(tpot.id, 1, 2);
  });
});
