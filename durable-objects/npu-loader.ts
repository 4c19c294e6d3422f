/**
 * Model loading for the Npu, in the scale-up steps it owns: pre-load the runtime (instantiate
 * the wasm kernels and reserve memory; a pooled Npu has done this before it is leased), load
 * weights (read the GGUF image from a weight tier, weight-tiers.ts, and build the model
 * instance in an arena sized to the model: weights + workspace + the configured KV share, capped
 * by the NPU budget), and unbind (drop the model and the runtime: the next runtime starts with
 * zeroed memory). The Npu keeps the GGUF header it loaded, so peers can fork from it: a fork
 * copies the header and the built weight region of kernel memory, and rebuilds nothing.
 */
import type { Executor } from "../shared/engine/executor.ts";
import {
  createInstance,
  type InstanceSource,
  type ModelInstance,
} from "../shared/engine/instance.ts";
import { errorInfo, failure, type Result } from "../shared/errors.ts";
import { parseGguf } from "../shared/gguf/gguf.ts";
import { errorFields, type Logger } from "../shared/log.ts";
import { KernelMemoryError, type Kernels } from "../shared/model/kernels.ts";
import { roundAllocBytes } from "../shared/model/kernels-js.ts";
import { createWasmKernels, WASM_KERNEL_IMPORTS } from "../shared/model/kernels-wasm.ts";
import type { Transformer } from "../shared/model/transformer.ts";
import type { WeightSelection } from "../shared/model/weights.ts";
import { npuLoadPlan } from "../shared/serving/scale-plan.ts";
import type { LoadReport, WeightSource } from "../shared/types/instances.ts";
import { type Env, getConfig } from "./env.ts";
import { KERNELS_BUILD, kernelsModule } from "./kernels-module.ts";
import {
  copyRegion,
  type ForkImage,
  filled,
  forkLost,
  readAttentionWeights,
  readFork,
  readWeights,
  regionStream,
  type WeightRef,
} from "./weight-tiers.ts";

const PAGE_BYTES = 65536;
/** The OS's page (x86-64 Linux): the unit it commits memory in on first touch. */
const OS_PAGE_BYTES = 4096;

export interface Loaded {
  model: string;
  weights: WeightSelection;
  instance: ModelInstance;
  kernels: Kernels;
  /** The GGUF header (metadata and tensor table): with the weight region, what a fork copies. */
  header: Uint8Array;
  /** Bytes fetched from the weight tier for this load. */
  bytesRead: number;
}

/**
 * How an attention rank of a moe-attention instance loads: without the MoE experts, with an
 * executor that sends the experts' halves to the expert ranks (attention-rank.ts).
 */
export interface AttentionLoad {
  makeExecutor: (t: Transformer) => Executor;
  /** Activation workspaces the executor uses (2: ping-pong micro-batches). */
  workspaces: number;
}

interface Runtime {
  wasm: WebAssembly.Instance;
  memory: WebAssembly.Memory;
  heapBase: number;
}

/** SHA-256 (hex) of a byte range. */
async function sha256(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** An NPU's one model, and its runtime; concurrent callers share the load in flight. */
export class ModelSlot {
  current: Loaded | null = null;
  #runtime: Runtime | null = null;
  #loading: Promise<Result<LoadReport>> | null = null;
  #loadingModel: string | null = null;
  /** Set before the first load to load as a moe-attention attention rank. */
  attention: AttentionLoad | null = null;

  constructor(
    private readonly env: Env,
    private readonly log: Logger,
  ) {}

  /** Bytes of memory the runtime has past its heap base (its arena's reserve); 0 without one. */
  get reservedBytes(): number {
    const rt = this.#runtime;
    return rt ? rt.memory.buffer.byteLength - rt.heapBase : 0;
  }

  /** The runtime is up (instantiated, memory reserved) and no model is bound. */
  get warm(): boolean {
    return this.#runtime !== null && this.current === null && this.#loading === null;
  }

  /**
   * Pre-loads the runtime: instantiates the wasm kernels (once) and grows their memory to hold
   * `reserveBytes` of arena, so a later load of a model that size grows nothing. With `commit`
   * (a pooled Npu), every OS page of the reserve is touched too, so the OS commits it now rather
   * than on first touch during a load (for 43 MB, about 16 ms here). The touch writes back each
   * byte it reads: memory in use keeps its values.
   */
  async preload(reserveBytes: number, commit = false): Promise<void> {
    if (!this.#runtime) {
      const wasm = await WebAssembly.instantiate(kernelsModule, WASM_KERNEL_IMPORTS);
      const ex = wasm.exports as { memory: WebAssembly.Memory; heapBase: () => number };
      this.#runtime = { wasm, memory: ex.memory, heapBase: roundAllocBytes(ex.heapBase()) };
    }
    const { memory, heapBase } = this.#runtime;
    const need = Math.ceil((heapBase + reserveBytes) / PAGE_BYTES);
    const have = memory.buffer.byteLength / PAGE_BYTES;
    if (need > have) memory.grow(need - have);
    if (commit) {
      const view = new Uint8Array(memory.buffer, heapBase, reserveBytes);
      for (let i = 0; i < reserveBytes; i += OS_PAGE_BYTES) view[i] |= 0;
    }
  }

  /** Drops the model and the runtime (its memory); the Npu is bound to nothing. */
  unbind(): void {
    this.current = null;
    this.#runtime = null;
  }

  /** `model` loaded from the R2 registry (once): the lazy path of a task on an unloaded Npu. */
  async ensure(model: string, r2Key: string): Promise<Result<Loaded>> {
    if (this.current?.model === model) return { ok: true, value: this.current };
    const r = await this.load({ model, r2Key, generation: 0 }, { tier: "r2" });
    return r.ok ? { ok: true, value: this.current as Loaded } : r;
  }

  /**
   * Loads `ref` from `source` into an arena sized to the model (pre-loading the runtime first if
   * it is not up). Another model bound or loading is an error value; the same model is shared.
   * With `verify`, the report's digest covers the arena as loaded (weights, zeroed KV).
   */
  load(ref: WeightRef, source: WeightSource, verify = false): Promise<Result<LoadReport>> {
    const other = this.current?.model ?? this.#loadingModel;
    if (other !== null && other !== ref.model) {
      return Promise.resolve(
        failure(errorInfo("internal", `this NPU serves ${other}, not ${ref.model}`)),
      );
    }
    if (this.current) {
      const report: LoadReport = {
        bytesByTier: { r2: 0, staged: 0, fork: 0 },
        preloadMs: 0,
        loadMs: 0,
        arenaBytes: this.current.kernels.capacityBytes,
        weightsDigest: "",
      };
      return Promise.resolve({ ok: true, value: report });
    }
    this.#loadingModel = ref.model;
    this.#loading ??= this.#load(ref, source, verify).then((r) => {
      this.#loading = null;
      this.#loadingModel = null;
      return r;
    });
    return this.#loading;
  }

  async #load(ref: WeightRef, source: WeightSource, verify: boolean): Promise<Result<LoadReport>> {
    const t0 = Date.now();
    const weights = this.attention ? ("attention" as const) : ("all" as const);
    // a fork copies a peer's built region; otherwise an attention rank reads only its tensors,
    // by R2 range reads
    const read =
      source.tier === "fork"
        ? await readFork(this.env, ref, source.fromInstanceId, weights)
        : this.attention
          ? await readAttentionWeights(this.env, ref).catch((e: unknown) =>
              failure(
                errorInfo("internal", `cannot read model ${ref.model}: ${(e as Error).message}`),
              ),
            )
          : await readWeights(this.env, ref, source);
    if (!read.ok) return read;
    const v = read.value;
    const { bytesByTier } = v;
    const bytesRead = bytesByTier.r2 + bytesByTier.staged + bytesByTier.fork;
    try {
      const file =
        "region" in v ? parseGguf(v.header, { headerOnly: true }) : (v.file ?? parseGguf(v.bytes));
      const role = { weights, workspaces: this.attention?.workspaces ?? 1 };
      const { opts, arena } = npuLoadPlan(file, getConfig(this.env), role);
      const t1 = Date.now();
      await this.preload(arena);
      const preloadMs = Date.now() - t1;
      const rt = this.#runtime as Runtime;
      const kernels = createWasmKernels(rt.wasm, arena);
      // a fork copies the peer's built weight region straight into the place where the layout
      // puts the weights (the fresh arena's first allocations): nothing is parsed or converted
      let src: InstanceSource;
      if ("region" in v) {
        const at = kernels.usedBytes;
        const n = v.numRegionBytes;
        if (at + n > kernels.capacityBytes) {
          throw new Error(`the forked weights (${n} bytes) exceed the arena of ${arena} bytes`);
        }
        if (!(await copyRegion(v.region, new Uint8Array(rt.memory.buffer, rt.heapBase + at, n)))) {
          this.#runtime = null; // a half-written arena is not reused
          return forkLost(v.from, `stopped serving ${ref.model} during a fork`);
        }
        src = { header: v.header, fill: filled(at, n) };
      } else src = { file, bytes: v.bytes };
      const instance = createInstance(src, kernels, opts, this.attention?.makeExecutor);
      const weightsDigest = verify
        ? await sha256(new Uint8Array(rt.memory.buffer, rt.heapBase, kernels.usedBytes))
        : "";
      const header = "region" in v ? v.header : (v.header ?? v.bytes.slice(0, file.dataOffset));
      this.current = { model: ref.model, weights, instance, kernels, header, bytesRead };
      const loadMs = Date.now() - t0 - preloadMs;
      this.log.info("model.loaded", {
        model: ref.model,
        tier: source.tier,
        sizeBytes: bytesRead,
        arenaBytes: arena,
        numBlocks: instance.memory.numBlocks,
        weightBytes: instance.memory.weightBytes,
        residentWeightBytes: instance.residentWeightBytes,
        role: this.attention ? "attention" : "colocated",
        wasm: KERNELS_BUILD,
        durationMs: Date.now() - t0,
      });
      return {
        ok: true,
        value: { bytesByTier, preloadMs, loadMs, arenaBytes: arena, weightsDigest },
      };
    } catch (e) {
      if ("region" in v) v.region.cancel().catch(() => {}); // a copy not started or cut short
      this.log.error("model.load_failed", { model: ref.model, ...errorFields(e) });
      this.#runtime = null; // a half-used arena is not reused
      // a model over this NPU's budget (the budget changed since its upload) will not fit on retry
      const code = e instanceof KernelMemoryError ? "model_too_large" : null;
      return failure(
        errorInfo(
          "internal",
          `cannot load model ${ref.model}: ${(e as Error).message}`,
          null,
          code,
        ),
      );
    }
  }

  /**
   * What a fork target copies (weight-tiers.ts readFork): the GGUF header and the weight region
   * of kernel memory as this Npu's load built it, or null unless `model` with the same weight
   * selection is bound here. The stream reads the region in place (weight-tiers.ts regionStream).
   */
  forkImage(model: string, weights: WeightSelection): ForkImage | null {
    const l = this.current;
    const rt = this.#runtime;
    if (l?.model !== model || l.weights !== weights || !rt) return null;
    // the weights are the kernels' first allocations (createInstance on a fresh arena)
    const n = l.instance.residentWeightBytes;
    return {
      header: l.header,
      numRegionBytes: n,
      region: regionStream(rt.memory.buffer, rt.heapBase, n),
    };
  }

  /** Forgets the model and its runtime (a hung engine is replaced): the next task loads both. */
  drop(): void {
    this.current = null;
    // a wasm instance backs one Kernels object: the next load instantiates a fresh runtime
    this.#runtime = null;
    this.#loading = null;
    this.#loadingModel = null;
  }
}
