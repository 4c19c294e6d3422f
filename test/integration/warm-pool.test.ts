/**
 * The pre-warmed pool follows the largest arena a load asked for: a refill grows the warm pooled
 * Npus that were reserved before (their arenas committed in the pre-load), not only the new ones.
 */
import { runInDurableObject } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import type { ClusterManager } from "../../durable-objects/cluster-manager.ts";
import type { NpuParts } from "../../durable-objects/npu-parts.ts";
import { npuName } from "../../shared/protocol/names.ts";
import { cluster } from "./scaling-helpers.ts";

const reserveOf = (id: string) =>
  runInDurableObject(
    env.NPU.getByName(npuName(id)),
    (npu) => (npu as unknown as { parts: NpuParts }).parts.slot.reservedBytes,
  );

describe("warm pool", () => {
  it("grows the warm pooled arenas when a load asks for a larger one", async () => {
    const warm = await runInDurableObject(cluster(), async (cm: ClusterManager) => {
      await cm.pool.warm.refill();
      return {
        ids: cm.pool.warm
          .list()
          .filter((x) => x.state === "warm")
          .map((x) => x.id),
        reserve: cm.pool.warm.reserveBytes,
      };
    });
    expect(warm.ids.length).toBeGreaterThan(0);
    const larger = warm.reserve + 8 * 2 ** 20;
    for (const id of warm.ids) expect(await reserveOf(id)).toBeLessThan(larger);
    // what a load of a larger model does (instance-pool.ts), then the refill after its scale-up
    const after = await runInDurableObject(cluster(), async (cm: ClusterManager) => {
      cm.pool.warm.reserveBytes = larger;
      await cm.pool.warm.refill();
      return cm.pool.warm.list();
    });
    for (const id of warm.ids) {
      expect(after.find((x) => x.id === id)?.state).toBe("warm");
      expect(await reserveOf(id)).toBeGreaterThanOrEqual(larger);
    }
  });
});
