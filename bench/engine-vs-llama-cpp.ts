/**
 * `bench:engine --vs-llama-cpp`: decode tokens/s of our engine (Node, one thread) and of
 * llama.cpp (one thread) at batch 1, 8 and 32 on the same GGUF files in the same run, one
 * after the other, for each file type (the source file and llama-quantize's conversions of it),
 * with the roofline: weight bytes streamed per generated token against the measured memory
 * bandwidth.
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
import { parseGguf } from "../shared/model/gguf.ts";
import { measureReadBandwidth } from "./bandwidth.ts";
import { type EngineMeasureOptions, measure } from "./engine-measure.ts";
import {
  BENCH_TYPES,
  type BenchType,
  batchedBenchDecode,
  llamaBenchDecode,
  quantizedPath,
} from "./llama-cpp.ts";

export const VS_BATCHES = [1, 8, 32] as const;
type PerBatch = Record<`b${(typeof VS_BATCHES)[number]}`, number>;

/** llama_ftype values of the types llama-quantize makes here (general.file_type). */
const FILE_TYPES: Record<number, BenchType> = {
  0: "F32",
  1: "F16",
  7: "Q8_0",
  2: "Q4_0",
  15: "Q4_K_M",
};

export interface VsOptions extends EngineMeasureOptions {
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

async function ours(file: string, o: VsOptions) {
  const bytes = new Uint8Array(readFileSync(file));
  try {
    const tps = new Map<number, number>();
    let weightBytes = 0;
    for (const b of VS_BATCHES) {
      const t = await measure(bytes, b, o);
      tps.set(b, t.decodeTokensPerS);
      weightBytes = t.weightBytes;
    }
    return { tps, weightBytes };
  } catch (e) {
    return { error: (e as Error).message.split("\n")[0] as string };
  }
}

export async function compareWithLlamaCpp(o: VsOptions) {
  const bandwidth = await measureReadBandwidth();
  const header = parseGguf(readFileSync(o.source), { headerOnly: true });
  const sourceType = FILE_TYPES[Number(header.metadata.get("general.file_type") ?? 0)];
  if (sourceType === undefined)
    throw new Error(`${o.source}: not an F32/F16/Q8_0 source (general.file_type)`);
  const untied = header.tensors.has("output.weight");
  const types: Record<string, unknown> = {};
  let params = 0;
  for (const type of o.types) {
    const file = type === sourceType ? o.source : quantizedPath(o.llamaCppBin, o.source, type);
    const our = await ours(file, o);
    const single = llamaBenchDecode(o.llamaCppBin, file, o.numTokens, o.runs);
    const batched = batchedBenchDecode(o.llamaCppBin, file, o.numTokens, [8, 32], o.runs);
    params = single.params;
    const llama = (b: number) => (b === 1 ? single.tokensPerS : (batched.get(b) as number));
    const llamaTps = perBatch(llama, 1);
    const llamaBytes = perBatch((b) => single.modelBytes / b, 0);
    const llamaGbps = perBatch((b) => (single.modelBytes * llama(b)) / b / 1e9, 1);
    if ("error" in our) {
      types[type] = {
        file: basename(file),
        ours: { error: our.error },
        llama_cpp: llamaTps,
        ratio: null,
        weight_bytes_per_token: { ours: null, llama_cpp: llamaBytes },
        implied_gbps: { ours: null, llama_cpp: llamaGbps },
      };
      continue;
    }
    const ourTps = (b: number) => our.tps.get(b) as number;
    types[type] = {
      file: basename(file),
      ours: perBatch(ourTps, 1),
      llama_cpp: llamaTps,
      ratio: perBatch((b) => ourTps(b) / llama(b), 2),
      weight_bytes_per_token: {
        ours: perBatch((b) => our.weightBytes / b, 0),
        llama_cpp: llamaBytes,
      },
      implied_gbps: {
        ours: perBatch((b) => (our.weightBytes * ourTps(b)) / b / 1e9, 1),
        llama_cpp: llamaGbps,
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
    runs: o.runs,
    llama_cpp_tools: "llama-bench (b1), llama-batched-bench -npp 8 (b8, b32)",
  };
}

/** One line per type: tokens/s ours | llama.cpp | ratio at each batch size. */
export function formatComparison(r: Awaited<ReturnType<typeof compareWithLlamaCpp>>): string {
  const lines = [
    `${r.model}: ${(r.params / 1e6).toFixed(1)} M params, read bandwidth ${r.bandwidth_gbps} GB/s`,
  ];
  for (const [type, row] of Object.entries(r.types)) {
    const t = row as {
      ours: PerBatch | { error: string };
      llama_cpp: PerBatch;
      ratio: PerBatch | null;
    };
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
