/**
 * SLO misses as an autoscaler input: a deployment whose tasks miss its TTFT/TPOT objectives
 * scales out with no queue behind it, while the same traffic on a deployment with loose
 * objectives holds. The ClusterManager's alarm is cancelled and its tick driven here.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ClusterManager } from "../../durable-objects/cluster-manager.ts";
import { lemmaProblem } from "../../shared/eval/lemma-chain.ts";
import { npuName } from "../../shared/protocol/names.ts";
import { MAX_SLO_TPOT_MS, MAX_SLO_TTFT_MS } from "../../shared/types/instances.ts";
import { cluster, create, deployment, lastTaskEndedAt, MODEL, serving } from "./scaling-helpers.ts";
import { post, postDeployment } from "./worker-client.ts";

/**
 * Five requests at once with long prompts (chunked prefill): at most 4 sequences ever wait. Each
 * prompt is a lemma problem's five times over: 365 characters, one token each in the lemma
 * model's vocabulary, more than MAX_NUM_BATCHED_TOKENS (256) and within its context of 512.
 */
async function traffic(deploymentId: string): Promise<void> {
  const rs = await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      post("/v1/completions", {
        model: MODEL,
        deployment: deploymentId,
        prompt: lemmaProblem(5, i).prompt.repeat(5),
        max_tokens: 8,
        temperature: 0,
        ignore_eos: true,
      }),
    ),
  );
  for (const r of rs) expect(r.status).toBe(200);
}

describe("autoscaler SLO input", () => {
  it("validates SLO targets", async () => {
    for (const slo of [
      { ttft_ms: 0 },
      { tpot_ms: 1.5 },
      { ttft_ms: MAX_SLO_TTFT_MS + 1 },
      { p99: 1 },
    ]) {
      const res = await postDeployment({
        model: MODEL,
        mode: "colocated",
        instances: { colocated: 1 },
        slo,
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: { param: string } }).error.param).toMatch(/^slo/);
    }
  });

  it("scales out on SLO misses (not the queue); loose objectives hold", async () => {
    const bounds = { instances: { colocated: 1 }, min_instances: 1, max_instances: 2 };
    const strict = await create({ ...bounds, slo: { ttft_ms: 1, tpot_ms: 1 } });
    const loose = await create({
      ...bounds,
      slo: { ttft_ms: MAX_SLO_TTFT_MS, tpot_ms: MAX_SLO_TPOT_MS },
    });
    expect((await cluster().getDeployment({ id: strict.id }))?.scaling.slo).toEqual({
      ttftMs: 1,
      tpotMs: 1,
    });
    const cm = cluster();
    // no tick of its own while the traffic runs: the one below is the test's
    await runInDurableObject(cm, (_c: ClusterManager, state) => state.storage.deleteAlarm());
    await Promise.all([traffic(strict.id), traffic(loose.id)]);
    for (const d of [strict, loose]) {
      const [inst] = (await serving(d.id, 1)).instances;
      const stats = await env.NPU.getByName(npuName(inst?.id as string)).stats();
      expect(stats.numWaiting).toBe(0);
      expect(stats.recentTasks.length).toBeGreaterThanOrEqual(5);
      expect(stats.recentTasks.every((t) => t.ttftMs !== null && t.tpotMs !== null)).toBe(true);
    }
    // the tick runs as the first deployment's traffic ends (its clock driven: on a loaded machine
    // the checks above can take longer than the SLO window)
    const at = Math.min(await lastTaskEndedAt(strict.id), await lastTaskEndedAt(loose.id)) + 1;
    const decisions = await runInDurableObject(cm, (c: ClusterManager) => c.autoscaler.tick(at));
    const of = (id: string) => decisions.find((x) => x.deploymentId === id)?.decision;
    expect(of(strict.id)).toEqual({ target: 2, reason: "slo" });
    expect(of(loose.id)?.target).toBe(1);
    await serving(strict.id, 2);
    expect((await deployment(loose.id)).instances).toHaveLength(1);
  });
});
