/**
 * Setting up a moe-attention instance (run once by its rank 0, through the Npu's `moeSetup`):
 * checks the model has enough experts, makes the group spec with the primary expert map, and
 * configures every Expert DO and then every attention rank. The running attention role is
 * attention-rank.ts.
 */

import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import { primaryMap } from "../shared/moe/expert-map.ts";
import {
  MOE_EXCHANGE_TIMEOUT_MS,
  type MoeGroupSpec,
  type MoeRankLoaded,
} from "../shared/protocol/moe.ts";
import { expertName, npuName } from "../shared/protocol/names.ts";
import { type Env, getConfig } from "./env.ts";
import { readHeader } from "./r2-range.ts";

/** What POST /api/deployments asks of a moe-attention instance's rank 0. */
export interface MoeSetup {
  instanceId: string;
  model: string;
  r2Key: string;
  numAttention: number;
  numExperts: number;
}

/**
 * Sets up a moe-attention instance (run by its rank 0): reads the model's header, makes the
 * primary expert map, loads every Expert DO, then every attention rank (`self` for rank 0).
 * Failures (too many expert ranks, a rank over its memory budget) are values.
 */
export async function setupGroup(
  env: Env,
  s: MoeSetup,
  self: (spec: MoeGroupSpec) => Promise<Result<MoeRankLoaded>>,
): Promise<Result<{ spec: MoeGroupSpec; loaded: MoeRankLoaded[] }>> {
  const config = modelConfigFromGguf(await readHeader(env, s.r2Key));
  if (config.numExperts === 0 || s.numExperts > config.numExperts) {
    const msg =
      config.numExperts === 0
        ? `model ${s.model} has no experts: moe-attention needs a MoE model`
        : `model ${s.model} has ${config.numExperts} experts: at most that many expert ranks`;
    return failure(errorInfo("invalid_request", msg, "instances"));
  }
  const spec: MoeGroupSpec = {
    ...s,
    map: primaryMap(config.numHiddenLayers, config.numExperts, s.numExperts),
    timeoutMs: MOE_EXCHANGE_TIMEOUT_MS,
    watch: getConfig(env).expertWatch,
    microBatches: getConfig(env).moeMicroBatches,
  };
  const experts = await Promise.all(
    Array.from({ length: s.numExperts }, (_, j) =>
      env.EXPERT.getByName(expertName(s.instanceId, j)).configure({ spec, rank: j }),
    ),
  );
  const attention = await Promise.all(
    Array.from({ length: s.numAttention }, (_, a) =>
      a === 0
        ? self(spec)
        : env.NPU.getByName(npuName(s.instanceId, a)).attentionConfigure({ spec, rank: a }),
    ),
  );
  const loaded: MoeRankLoaded[] = [];
  for (const r of [...experts, ...attention]) {
    if (!r.ok) return r;
    loaded.push(r.value);
  }
  return { ok: true, value: { spec, loaded } };
}
