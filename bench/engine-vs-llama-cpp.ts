/**
 * `bench:engine --vs-llama-cpp`: decode tokens/s of our engine (Node, one thread) and of
 * llama.cpp (one thread) at batch 1, 8 and 32 on the same GGUF files in the same run, one
 * after the other, for each file type (the source file and llama-quantize's conversions of it),
 * with the roofline: weight bytes streamed per generated token against the measured memory
 * bandwidth.
 *
 * The machine is shared, so the two engines take turns: each type loads our three instances per
 * wasm build (`builds`: wasm/kernels-relaxed.wasm, wasm/kernels.wasm) and warms them up once, then
 * each round runs ours at batch 1, 8 and 32 with each build (checking that the builds generate the
 * same tokens), one `llama-bench -r 1` and one `llama-batched-bench`. Tokens/s are medians over the rounds; a ratio is the median of the
 * rounds' ratios, so that load which comes and goes hits both sides of each ratio alike.
 *
 * Bytes per token = bytes of the weights read in one decode step / batch size. A decode step
 * reads every weight matrix once; with a tied output projection (the generated bench model)
 * that is all of the model's weights, so ours is the instance's weight bytes in kernel memory
 * (its memory plan: what it stores, whatever the file holds) and llama.cpp's is its model size
 * (`llama-bench`'s model_size). With an untied `output.weight` both also count the token
 * embedding, which decode reads one row of: `includes_token_embd` says so.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { WASM_BUILD_URLS } from "../hosts/node-kernels.ts";
import { parseGguf } from "../shared/gguf/gguf.ts";
import type { WasmBuild } from "../shared/model/kernels-wasm.ts";
import { measureReadBandwidth } from "./bandwidth.ts";
import {
  type EngineRunner,
  type EngineRunOptions,
  engineRunner,
  median,
} from "./engine-measure.ts";
import {
  BENCH_TYPES,
  type BenchType,
  batchedBenchDecode,
  llamaBenchDecode,
  quantizedPath,
} from "./llama-cpp.ts";

export const VS_BATCHES = [1, 8, 32] as const;
type PerBatch = Record<`b${(typeof VS_BATCHES)[number]}`, number>;

/** One file type's row of the JSON; `ours` is `{ error }` when our engine cannot load the file. */
export interface TypeResult {
  file: string;
  ours: PerBatch | { error: string };
  llama_cpp: PerBatch;
  /** Ours / llama.cpp, the median of the rounds' ratios. */
  ratio: PerBatch | null;
  /** The issue's targets: single stream >= 0.8x llama.cpp, batch-32 throughput >= 1.0x. */
  meets: { b1_ge_0_8x: boolean; b32_ge_1x: boolean } | null;
  weight_bytes_per_token: { ours: PerBatch | null; llama_cpp: PerBatch };
  implied_gbps: { ours: PerBatch | null; llama_cpp: PerBatch };
  /** The same for each further wasm build, by build (`ours` above is the first build's). */
  other_builds?: Partial<Record<WasmBuild, BuildResult>>;
  /** With a 128-bit llama.cpp build: its tokens/s and ours (first build) / it, rounds' median. */
  llama_cpp_128bit?: PerBatch;
  ratio_128bit?: PerBatch | null;
}

type BuildResult = Pick<TypeResult, "ours" | "ratio" | "meets"> & { implied_gbps: PerBatch | null };

/** llama_ftype values of the types llama-quantize makes here (general.file_type). */
const FILE_TYPES: Record<number, BenchType> = {
  0: "F32",
  1: "F16",
  7: "Q8_0",
  2: "Q4_0",
  15: "Q4_K_M",
};

export interface VsOptions extends EngineRunOptions {
  /** Rounds. */
  runs: number;
  source: string;
  types: BenchType[];
  llamaCppBin: string;
  /**
   * A llama.cpp build limited to 128-bit integer vectors (its AVX kernels, no AVX2/FMA/AVX-512),
   * the width of wasm SIMD128, timed in the same rounds; the files are converted by llamaCppBin.
   */
  llamaCpp128Bin?: string;
  /** The wasm builds to run (kernels "wasm"), the first one reported as `ours`. */
  builds: WasmBuild[];
}

export function parseWasmBuilds(list: string): WasmBuild[] {
  const builds = list.split(",").map((b) => b.trim());
  for (const b of builds)
    if (!(b in WASM_BUILD_URLS)) throw new Error(`unknown wasm build ${b}: relaxed-simd, simd128`);
  return builds as WasmBuild[];
}

export function parseBenchTypes(list: string): BenchType[] {
  const types = list.split(",").map((t) => t.trim().toUpperCase());
  for (const t of types)
    if (!(BENCH_TYPES as readonly string[]).includes(t))
      throw new Error(`unknown type ${t}: expected some of ${BENCH_TYPES.join(",")}`);
  return types as BenchType[];
}

const perBatch = (f: (b: number) => number, digits: number): PerBatch =>
  Object.fromEntries(VS_BATCHES.map((b) => [`b${b}`, +f(b).toFixed(digits)])) as PerBatch;

/** Our warmed-up instances at each batch size, or why the file does not load. */
async function ourRunners(
  bytes: Uint8Array,
  o: EngineRunOptions,
): Promise<Map<number, EngineRunner> | { error: string }> {
  const runners = new Map<number, EngineRunner>();
  try {
    for (const b of VS_BATCHES) {
      const runner = await engineRunner(bytes, b, o);
      await runner.run();
      runners.set(b, runner);
    }
    return runners;
  } catch (e) {
    return { error: (e as Error).message.split("\n")[0] as string };
  }
}

/** Our runs of one build (or of the JS kernels: `o.builds` unused). */
interface OurSamples {
  runners: Map<number, EngineRunner> | { error: string };
  tps: Map<number, number[]>;
  ratios: Map<number, number[]>;
}

interface TypeSamples {
  /** By build, in `o.builds` order (one entry for the JS kernels). */
  ours: OurSamples[];
  llamaTps: Map<number, number[]>;
  /** The 128-bit build's tokens/s, and the first build's ratios to it (empty without it). */
  llama128Tps: Map<number, number[]>;
  ratios128: Map<number, number[]>;
  modelBytes: number;
  params: number;
}

/** `runs` rounds of ours (each build) then llama.cpp at every batch size on one file. */
async function sampleType(file: string, o: VsOptions): Promise<TypeSamples> {
  const bytes = new Uint8Array(readFileSync(file));
  const lists = () => new Map<number, number[]>(VS_BATCHES.map((b) => [b, []]));
  const variants = o.kernels === "wasm" ? o.builds : [undefined];
  const ours: OurSamples[] = [];
  for (const build of variants) {
    const wasmModule = build && (await WebAssembly.compile(readFileSync(WASM_BUILD_URLS[build])));
    const runners = await ourRunners(bytes, { ...o, wasmModule });
    ours.push({ runners, tps: lists(), ratios: lists() });
  }
  const t: TypeSamples = {
    ours,
    llamaTps: lists(),
    llama128Tps: lists(),
    ratios128: lists(),
    modelBytes: 0,
    params: 0,
  };
  for (let r = 0; r < o.runs; r++) {
    const mine = ours.map(() => new Map<number, number>());
    for (const b of VS_BATCHES) {
      let tokens: string | undefined;
      for (const [i, s] of ours.entries()) {
        if ("error" in s.runners) continue;
        const run = await (s.runners.get(b) as EngineRunner).run();
        mine[i]?.set(b, run.decodeTokensPerS);
        if (tokens !== undefined && run.tokens.join() !== tokens)
          throw new Error(`${basename(file)} b${b}: the wasm builds generated different tokens`);
        tokens = run.tokens.join();
      }
    }
    const llamaCpp = (bin: string) => {
      const single = llamaBenchDecode(bin, file, o.numTokens, 1);
      const batched = batchedBenchDecode(
        bin,
        file,
        o.numTokens,
        VS_BATCHES.filter((b) => b > 1),
      );
      return {
        single,
        tps: (b: number) => (b === 1 ? single.tokensPerS : (batched.get(b) as number)),
      };
    };
    const main = llamaCpp(o.llamaCppBin);
    const narrow = o.llamaCpp128Bin === undefined ? null : llamaCpp(o.llamaCpp128Bin);
    t.modelBytes = main.single.modelBytes;
    t.params = main.single.params;
    for (const b of VS_BATCHES) {
      const llama = main.tps(b);
      t.llamaTps.get(b)?.push(llama);
      const first = mine[0]?.get(b);
      if (narrow) {
        t.llama128Tps.get(b)?.push(narrow.tps(b));
        if (first !== undefined) t.ratios128.get(b)?.push(first / narrow.tps(b));
      }
      for (const [i, s] of ours.entries()) {
        const ourTps = mine[i]?.get(b);
        if (ourTps === undefined) continue;
        s.tps.get(b)?.push(ourTps);
        s.ratios.get(b)?.push(ourTps / llama);
      }
    }
  }
  return t;
}

const med = (m: Map<number, number[]>) => (b: number) => median(m.get(b) as number[]);

/** One build's tokens/s, ratios and targets, and its weight bytes per token (null: no load). */
function buildResult(s: OurSamples): BuildResult & { bytes: PerBatch | null } {
  if ("error" in s.runners)
    return {
      ours: { error: s.runners.error },
      ratio: null,
      meets: null,
      implied_gbps: null,
      bytes: null,
    };
  const weightBytes = (s.runners.get(1) as EngineRunner).weightBytes;
  const ours = med(s.tps);
  const ratio = perBatch(med(s.ratios), 2);
  return {
    ours: perBatch(ours, 1),
    ratio,
    meets: { b1_ge_0_8x: ratio.b1 >= 0.8, b32_ge_1x: ratio.b32 >= 1 },
    implied_gbps: perBatch((b) => (weightBytes * ours(b)) / b / 1e9, 1),
    bytes: perBatch((b) => weightBytes / b, 0),
  };
}

export async function compareWithLlamaCpp(o: VsOptions) {
  const bandwidth = await measureReadBandwidth();
  const header = parseGguf(readFileSync(o.source), { headerOnly: true });
  const sourceType = FILE_TYPES[Number(header.metadata.get("general.file_type") ?? 0)];
  if (sourceType === undefined)
    throw new Error(`${o.source}: not an F32/F16/Q8_0 source (general.file_type)`);
  const untied = header.tensors.has("output.weight");
  const types: Record<string, TypeResult> = {};
  let params = 0;
  for (const type of o.types) {
    const file = type === sourceType ? o.source : quantizedPath(o.llamaCppBin, o.source, type);
    const t = await sampleType(file, o);
    params = t.params;
    const llama = med(t.llamaTps);
    const [first, ...rest] = t.ours.map(buildResult);
    if (!first) throw new Error("no build to run");
    types[type] = {
      file: basename(file),
      ours: first.ours,
      llama_cpp: perBatch(llama, 1),
      ratio: first.ratio,
      meets: first.meets,
      weight_bytes_per_token: {
        ours: first.bytes,
        llama_cpp: perBatch((b) => t.modelBytes / b, 0),
      },
      implied_gbps: {
        ours: first.implied_gbps,
        llama_cpp: perBatch((b) => (t.modelBytes * llama(b)) / b / 1e9, 1),
      },
      ...(o.llamaCpp128Bin === undefined
        ? {}
        : {
            llama_cpp_128bit: perBatch(med(t.llama128Tps), 1),
            ratio_128bit: first.ratio === null ? null : perBatch(med(t.ratios128), 2),
          }),
      ...(rest.length === 0
        ? {}
        : {
            other_builds: Object.fromEntries(
              rest.map(({ bytes: _, ...r }, i) => [o.builds[i + 1] as WasmBuild, r]),
            ),
          }),
    };
  }
  return {
    model: basename(o.source),
    params,
    includes_token_embd: untied,
    types,
    bandwidth_gbps: bandwidth.gbps,
    bandwidth_method: bandwidth.method,
    runtime: "node",
    node: process.version,
    kernels: o.kernels,
    ...(o.kernels === "wasm" ? { wasm: o.builds[0], wasm_builds: o.builds } : {}),
    threads: 1,
    tokens_per_sequence: o.numTokens,
    rounds: o.runs,
    llama_cpp_tools: "llama-bench (b1), llama-batched-bench -npp 8 (b8, b32)",
    ...(o.llamaCpp128Bin === undefined
      ? {}
      : {
          llama_cpp_128bit_build:
            "a build with -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF",
        }),
  };
}

/** One line per type: tokens/s ours | llama.cpp | ratio at each batch size. */
export function formatComparison(r: Awaited<ReturnType<typeof compareWithLlamaCpp>>): string {
  const lines = [
    `${r.model}: ${(r.params / 1e6).toFixed(1)} M params, read bandwidth ${r.bandwidth_gbps} GB/s`,
  ];
  for (const [type, t] of Object.entries(r.types)) {
    const builds: [string, Pick<TypeResult, "ours" | "ratio">][] = [[r.wasm ?? r.kernels, t]];
    for (const [name, b] of Object.entries(t.other_builds ?? {})) builds.push([name, b]);
    for (const [name, b] of builds) {
      const cells = VS_BATCHES.map((n) => {
        const k = `b${n}` as keyof PerBatch;
        const o = "error" in b.ours ? "-" : b.ours[k];
        return `b${n} ${o} / ${t.llama_cpp[k]} tok/s (${b.ratio ? `${b.ratio[k]}x` : "-"})`;
      });
      const err = "error" in b.ours ? `   ours: ${b.ours.error}` : "";
      lines.push(`${type.padEnd(7)} ${name.padEnd(12)} ${cells.join("   ")}${err}`);
    }
    const narrow = t.llama_cpp_128bit;
    if (narrow) {
      const cells = VS_BATCHES.map((n) => {
        const k = `b${n}` as keyof PerBatch;
        return `b${n} ${narrow[k]} tok/s (ours ${t.ratio_128bit ? `${t.ratio_128bit[k]}x` : "-"})`;
      });
      lines.push(`${type.padEnd(7)} ${"llama 128bit".padEnd(12)} ${cells.join("   ")}`);
    }
  }
  return lines.join("\n");
}
