/**
 * `bench:engine --vs-llama-cpp`: decode tokens/s of our engine (Node, one thread) and of
 * llama.cpp (one thread) at batch 1, 8 and 32 on the same GGUF files in the same run, one
 * after the other, for each file type (the source file and llama-quantize's conversions of it),
 * with the roofline: weight bytes streamed per generated token against the measured memory
 * bandwidth.
 *
 * The machine is shared, so the two engines take turns: each type loads our three instances and
 * warms them up once, then each round runs ours at batch 1, 8 and 32, one `llama-bench -r 1` and
 * one `llama-batched-bench`. Tokens/s are medians over the rounds; a ratio is the median of the
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
import { parseGguf } from "../shared/gguf/gguf.ts";
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
}

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
  file: string,
  o: VsOptions,
): Promise<Map<number, EngineRunner> | { error: string }> {
  const bytes = new Uint8Array(readFileSync(file));
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

interface TypeSamples {
  ours: Map<number, EngineRunner> | { error: string };
  ourTps: Map<number, number[]>;
  llamaTps: Map<number, number[]>;
  ratios: Map<number, number[]>;
  modelBytes: number;
  params: number;
}

/** `runs` rounds of ours then llama.cpp at every batch size on one file. */
async function sampleType(file: string, o: VsOptions): Promise<TypeSamples> {
  const ours = await ourRunners(file, o);
  const lists = () => new Map<number, number[]>(VS_BATCHES.map((b) => [b, []]));
  const t: TypeSamples = {
    ours,
    ourTps: lists(),
    llamaTps: lists(),
    ratios: lists(),
    modelBytes: 0,
    params: 0,
  };
  for (let r = 0; r < o.runs; r++) {
    const mine = new Map<number, number>();
    if (!("error" in ours))
      for (const [b, runner] of ours) mine.set(b, (await runner.run()).decodeTokensPerS);
    const single = llamaBenchDecode(o.llamaCppBin, file, o.numTokens, 1);
    const batched = batchedBenchDecode(
      o.llamaCppBin,
      file,
      o.numTokens,
      VS_BATCHES.filter((b) => b > 1),
    );
    t.modelBytes = single.modelBytes;
    t.params = single.params;
    for (const b of VS_BATCHES) {
      const llama = b === 1 ? single.tokensPerS : (batched.get(b) as number);
      t.llamaTps.get(b)?.push(llama);
      const ourTps = mine.get(b);
      if (ourTps === undefined) continue;
      t.ourTps.get(b)?.push(ourTps);
      t.ratios.get(b)?.push(ourTps / llama);
    }
  }
  return t;
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
    const med = (m: Map<number, number[]>) => (b: number) => median(m.get(b) as number[]);
    const llama = med(t.llamaTps);
    const llamaSide = {
      tps: perBatch(llama, 1),
      bytes: perBatch((b) => t.modelBytes / b, 0),
      gbps: perBatch((b) => (t.modelBytes * llama(b)) / b / 1e9, 1),
    };
    if ("error" in t.ours) {
      types[type] = {
        file: basename(file),
        ours: { error: t.ours.error },
        llama_cpp: llamaSide.tps,
        ratio: null,
        meets: null,
        weight_bytes_per_token: { ours: null, llama_cpp: llamaSide.bytes },
        implied_gbps: { ours: null, llama_cpp: llamaSide.gbps },
      };
      continue;
    }
    const weightBytes = (t.ours.get(1) as EngineRunner).weightBytes;
    const ours = med(t.ourTps);
    const ratio = perBatch(med(t.ratios), 2);
    types[type] = {
      file: basename(file),
      ours: perBatch(ours, 1),
      llama_cpp: llamaSide.tps,
      ratio,
      meets: { b1_ge_0_8x: ratio.b1 >= 0.8, b32_ge_1x: ratio.b32 >= 1 },
      weight_bytes_per_token: {
        ours: perBatch((b) => weightBytes / b, 0),
        llama_cpp: llamaSide.bytes,
      },
      implied_gbps: {
        ours: perBatch((b) => (weightBytes * ours(b)) / b / 1e9, 1),
        llama_cpp: llamaSide.gbps,
      },
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
    threads: 1,
    tokens_per_sequence: o.numTokens,
    rounds: o.runs,
    llama_cpp_tools: "llama-bench (b1), llama-batched-bench -npp 8 (b8, b32)",
  };
}

/** One line per type: tokens/s ours | llama.cpp | ratio at each batch size. */
export function formatComparison(r: Awaited<ReturnType<typeof compareWithLlamaCpp>>): string {
  const lines = [
    `${r.model}: ${(r.params / 1e6).toFixed(1)} M params, read bandwidth ${r.bandwidth_gbps} GB/s`,
  ];
  for (const [type, t] of Object.entries(r.types)) {
    const cells = VS_BATCHES.map((b) => {
      const k = `b${b}` as keyof PerBatch;
      const o = "error" in t.ours ? "-" : t.ours[k];
      return `b${b} ${o} / ${t.llama_cpp[k]} tok/s (${t.ratio ? `${t.ratio[k]}x` : "-"})`;
    });
    lines.push(
      `${type.padEnd(7)} ${cells.join("   ")}${"error" in t.ours ? `   ours: ${t.ours.error}` : ""}`,
    );
  }
  return lines.join("\n");
}
