/**
 * An in-process moe-attention instance for Node (tests, benchmarks): A attention ranks (engines
 * with attention weights only and a DisaggMoe executor) and E expert ranks (ExpertShards read by
 * byte ranges of the GGUF), joined by an in-process fabric: `deliver` hands a message to the
 * peer's inbox after a macrotask, as an RPC would. The same shared/ classes run in the DOs.
 */

import {
  createInstance,
  type InstanceOptions,
  type ModelInstance,
} from "../shared/engine/instance.ts";
import type { CommClock, CommMessage, CommPeer } from "../shared/fabric/comm.ts";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { readTensorImage } from "../shared/gguf/gguf-ranges.ts";
import { modelConfigFromGguf } from "../shared/model/config.ts";
import { ExpertShard, isExpertTensor } from "../shared/model/expert-shard.ts";
import type { Kernels } from "../shared/model/kernels.ts";
import { AttentionGroup } from "../shared/moe/attention-group.ts";
import { DisaggMoe } from "../shared/moe/disagg-executor.ts";
import { type ExpertMap, expertsOnRank, primaryMap } from "../shared/moe/expert-map.ts";
import { ExpertRank } from "../shared/moe/expert-rank.ts";
import { attentionExecutor, type PingPongMoe } from "../shared/moe/ping-pong.ts";
import {
  DEFAULT_EPLB,
  type EplbOptions,
  expertLoads,
  rankLoads,
  rebalance,
} from "../shared/serving/eplb.ts";
import { createKernels, type KernelKind } from "./node-kernels.ts";

export const nodeClock: CommClock = {
  now: () => performance.now(),
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface LocalMoeOptions {
  attention: number;
  experts: number;
  kind?: KernelKind;
  instance?: InstanceOptions;
  timeoutMs?: number;
  /** Kernel arena of each rank (default 256 MiB). */
  rankBudgetBytes?: number;
  /** Expert ranks that never answer (to test timeouts). */
  silentExperts?: readonly number[];
  /** Awaited by expert rank `rank` before each serve (fault drills: hang or throw). */
  beforeServe?: (rank: number) => Promise<void>;
  /** Two ping-ponging micro-batches per attention rank (shared/moe/ping-pong.ts). */
  pingPong?: boolean;
}

/** The [offset, offset + length) GGUF ranges one attention rank read. */
export type AttentionRead = { offset: number; length: number }[];

export interface LocalMoe {
  group: AttentionGroup;
  attention: ModelInstance[];
  attentionKernels: Kernels[];
  experts: ExpertRank[];
  expertShards: ExpertShard[];
  expertKernels: Kernels[];
  /** The live expert map (EPLB swaps it between steps). */
  map: { current: ExpertMap };
  /** Range reads the expert ranks made, in bytes. */
  bytesRangeRead: () => number;
  /** Per attention rank, the GGUF byte ranges it read. */
  attentionReads: AttentionRead[];
}

/** A peer whose messages arrive after a macrotask (as over RPC), never synchronously. */
function peer(target: () => { deliver(m: CommMessage): void }, silent = false): CommPeer {
  return {
    deliver: (m) =>
      new Promise<void>((resolve) => {
        setImmediate(() => {
          if (!silent) target().deliver(m);
          resolve();
        });
      }),
  };
}

export async function createLocalMoe(bytes: Uint8Array, o: LocalMoeOptions): Promise<LocalMoe> {
  const kind = o.kind ?? "wasm";
  const budget = o.rankBudgetBytes ?? 256 * 2 ** 20;
  const timeoutMs = o.timeoutMs ?? 30_000;
  const file = parseGguf(bytes);
  const config = modelConfigFromGguf(file);
  const moeLayers = Array.from({ length: config.numHiddenLayers }, (_, l) => l).filter((l) =>
    file.tensors.has(`blk.${l}.ffn_gate_inp.weight`),
  );
  const map = { current: primaryMap(config.numHiddenLayers, config.numExperts, o.experts) };
  const attention: ModelInstance[] = [];
  const attentionKernels: Kernels[] = [];
  const moes: (DisaggMoe | PingPongMoe)[] = [];
  const experts: ExpertRank[] = [];
  let rangeRead = 0;
  const read = async (offset: number, length: number) => {
    rangeRead += length;
    return bytes.slice(offset, offset + length);
  };
  // attention ranks: every tensor but the experts, by range reads (as the Npus read R2)
  const attentionReads: AttentionRead[] = [];
  for (let a = 0; a < o.attention; a++) {
    const ranges: AttentionRead = [];
    const image = await readTensorImage(
      file,
      async (offset, length) => {
        ranges.push({ offset, length });
        return bytes.slice(offset, offset + length);
      },
      (name) => !isExpertTensor(name),
    );
    attentionReads.push(ranges);
    const kernels = await createKernels(kind, budget);
    const microBatches = o.pingPong ? 2 : 1;
    const opts = { ...o.instance, weights: "attention" as const, workspaces: microBatches };
    const inst = createInstance(image, kernels, opts, (t) => {
      const built = attentionExecutor(
        t,
        microBatches,
        (microBatch) =>
          new DisaggMoe({
            rank: a,
            hiddenSize: config.hiddenSize,
            topK: config.numExpertsPerTok,
            moeLayers,
            experts: (j) => peer(() => experts[j] as ExpertRank, o.silentExperts?.includes(j)),
            map: () => map.current,
            clock: nodeClock,
            timeoutMs,
            microBatch,
          }),
      );
      moes.push(built.moe);
      return built.executor;
    });
    attention.push(inst);
    attentionKernels.push(kernels);
  }
  const expertShards: ExpertShard[] = [];
  const expertKernels: Kernels[] = [];
  const maxTokensPerRank = attention[0]?.transformer.shape.maxNumTokens ?? 0;
  for (let j = 0; j < o.experts; j++) {
    const kernels = await createKernels(kind, budget);
    const shard = await ExpertShard.load(file, read, config, kernels, (l) =>
      expertsOnRank(map.current, l, j),
    );
    expertShards.push(shard);
    expertKernels.push(kernels);
    experts.push(
      new ExpertRank({
        rank: j,
        numAttentionRanks: o.attention,
        maxTokensPerRank,
        config,
        kernels,
        shard,
        attention: (a) => peer(() => moes[a] as DisaggMoe | PingPongMoe),
        clock: nodeClock,
        timeoutMs,
        beforeServe: o.beforeServe && (() => o.beforeServe?.(j) ?? Promise.resolve()),
      }),
    );
  }
  const group = new AttentionGroup(
    attention.map((inst, a) => ({ engine: inst.engine, moe: moes[a] as DisaggMoe | PingPongMoe })),
  );
  return {
    group,
    attention,
    attentionKernels,
    experts,
    expertShards,
    expertKernels,
    map,
    bytesRangeRead: () => rangeRead,
    attentionReads,
  };
}

/**
 * Collects every expert rank's token counts since the last collection, rebalances the expert map
 * from them (one time slice), loads the new replicas on their ranks, then swaps the map: steps
 * already running finish on the old one. Returns the measured [layer][rank] loads it used.
 */
export async function rebalanceLocal(
  m: LocalMoe,
  opts: EplbOptions = DEFAULT_EPLB,
): Promise<number[][]> {
  const counts = m.experts.map((e) => e.takeTokenCounts());
  const slices = expertLoads(counts).map((perExpert) => [perExpert]);
  await applyMapLocal(m, rebalance(m.map.current, slices, opts));
  return rankLoads(counts);
}

/** Loads `map`'s experts on each rank of `m` (those it lacks), then makes it the current map. */
export async function applyMapLocal(m: LocalMoe, map: ExpertMap): Promise<void> {
  for (const [j, shard] of m.expertShards.entries()) {
    for (let l = 0; l < map.replicas.length; l++) await shard.add(l, expertsOnRank(map, l, j));
  }
  m.map.current = map;
}
