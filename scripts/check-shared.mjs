// House checks that Biome has no rule for: no Math.random in shared/ (use shared/random.ts), a
// line budget for the engine and maths (raise it deliberately, in a reviewed change), and the
// layer rule that workers/ imports only types from durable-objects/ (workers/index.ts, the
// composition root, re-exports the DO classes).
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

// Budgets grow only for new subsystems, never for growth of the old files. shared/gguf is the file
// format: the GGUF reader, and reading a header and chosen tensors by byte ranges (gguf-ranges.ts:
// R2 range reads, the truncation check from a header). shared/model is the weights and kernels:
// quantised weights (block formats, the JS reference matmulQ, mixed-type weight stacks) take about
// 850 of its lines, the KV-cache policies' page scorer about 190, moe-attention's split MoE layer
// and expert shards about 430, laying weights out from a header alone for NPU-fork (about 40),
// the relaxed wasm build's resident Q6_K form (Q6_K_LANES: its layout, the kernels' residentType
// and toResident, the JS reference's dot and dequantisation of it, about 110).
// shared/tokenizer is text <-> ids (SentencePiece and byte-level BPE with its pre-tokenizers).
// shared/engine is the step loop, scheduler, KV block manager and the KV-cache policies (engine/kv-
// policy/, about 450). shared/moe is moe-attention's disaggregated execution: the attention side's
// executor (and its two ping-ponging micro-batches), the attention group, expert ranks, the
// versioned expert map with failed-over ranks, and their memory plan.
const LINE_BUDGET = {
  "shared/model": 3380,
  "shared/gguf": 720,
  "shared/tokenizer": 1300,
  "shared/engine": 1750,
  "shared/moe": 950,
};

function files(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

let failed = false;
for (const file of files("shared")) {
  const text = readFileSync(file, "utf8");
  if (/Math\.random\s*\(/.test(text)) {
    console.error(`${file}: Math.random is banned in shared/ (use shared/random.ts)`);
    failed = true;
  }
}
for (const [dir, budget] of Object.entries(LINE_BUDGET)) {
  const lines = files(dir).reduce((n, f) => n + readFileSync(f, "utf8").split("\n").length, 0);
  console.log(`${dir}: ${lines} lines (budget ${budget})`);
  if (lines > budget) {
    console.error(`${dir} is over its line budget: split or simplify before raising it`);
    failed = true;
  }
}
const DO_IMPORT = /^\s*(import|export)\s+(?!type\b)[^;]*?from\s+["'][./]*\/durable-objects\//gm;
for (const file of files("workers")) {
  if (file === join("workers", "index.ts")) continue;
  for (const m of readFileSync(file, "utf8").matchAll(DO_IMPORT)) {
    console.error(`${file}: workers/ may import only types from durable-objects/: ${m[0].trim()}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
