/**
 * Two builds of wasm/kernels.ts on the engine's decode, in turns: decode-only tokens/s of a base
 * build (A, e.g. an earlier commit's kernels.wasm) and of the working tree's (B: the committed
 * build this Node runs, wasm/kernels.wasm, or wasm/kernels-relaxed.wasm under
 * `node --experimental-wasm-relaxed-simd --import tsx`) at each batch size, for each model file. The machine is shared, so each
 * round runs A then B back to back on instances loaded once (after one warm-up run each), and the
 * speedup is the median of the rounds' B / A ratios: load that comes and goes hits both alike.
 * Both builds must give the same tokens (the kernels' contract), which is checked on every run.
 *
 *   git show REV:wasm/kernels.wasm > .tmp/base.wasm
 *   npx tsx bench/kernels-ab.ts --base .tmp/base.wasm --models A.gguf,B.gguf [--batches 1,8,32]
 *     [--runs 5] [--tokens 64] [--json]
 *   node --experimental-wasm-relaxed-simd --import tsx bench/kernels-ab.ts --base wasm/kernels.wasm
 *     --models ...     (the relaxed build against the SIMD128 one)
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { WASM_KERNELS_URL } from "../hosts/node-kernels.ts";
import { engineRunner, median } from "./engine-measure.ts";

const { values } = parseArgs({
  options: {
    base: { type: "string" },
    models: { type: "string" },
    batches: { type: "string", default: "1,8,32" },
    runs: { type: "string", default: "5" },
    tokens: { type: "string", default: "64" },
    json: { type: "boolean", default: false },
  },
});
if (!values.base || !values.models) throw new Error("needs --base WASM and --models A.gguf,...");
const runs = Number(values.runs);
const numTokens = Number(values.tokens);
const batches = (values.batches as string).split(",").map(Number);
const moduleA = await WebAssembly.compile(readFileSync(values.base));
const moduleB = await WebAssembly.compile(readFileSync(WASM_KERNELS_URL));

interface Row {
  a: number;
  b: number;
  speedup: number;
}
const results: Record<string, Record<string, Row>> = {};
for (const path of values.models.split(",")) {
  const bytes = new Uint8Array(readFileSync(path));
  const perBatch: Record<string, Row> = {};
  for (const batch of batches) {
    const o = { numTokens, kernels: "wasm" as const };
    const ra = await engineRunner(bytes, batch, { ...o, wasmModule: moduleA });
    const rb = await engineRunner(bytes, batch, { ...o, wasmModule: moduleB });
    await ra.run();
    await rb.run();
    const as: number[] = [];
    const bs: number[] = [];
    const ratios: number[] = [];
    for (let r = 0; r < runs; r++) {
      const a = await ra.run();
      const b = await rb.run();
      if (a.tokens.join() !== b.tokens.join())
        throw new Error(`${basename(path)} b${batch}: the two builds generated different tokens`);
      as.push(a.decodeTokensPerS);
      bs.push(b.decodeTokensPerS);
      ratios.push(b.decodeTokensPerS / a.decodeTokensPerS);
    }
    const row = {
      a: Math.round(median(as) * 10) / 10,
      b: Math.round(median(bs) * 10) / 10,
      speedup: Math.round(median(ratios) * 100) / 100,
    };
    perBatch[`b${batch}`] = row;
    if (!values.json)
      console.log(`${basename(path)} b${batch}: ${row.a} -> ${row.b} tok/s (${row.speedup}x)`);
  }
  results[basename(path)] = perBatch;
}
console.log(
  JSON.stringify({ base: basename(values.base), tokens_per_sequence: numTokens, runs, results }),
);
