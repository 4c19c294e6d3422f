/**
 * Writes a seeded MoE checkpoint too large for one NPU (scripts/big-moe.ts) for the "model no
 * single DO can hold" path. Built on demand, never committed.
 *
 *   npx tsx scripts/make-big-moe.ts --out /tmp/big-moe.gguf [--experts 32] [--ff 2048] [--seed 7]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { SYNTHETIC_MODEL_PATH } from "../hosts/node-engine.ts";
import { BIG_MOE_DEFAULTS, buildBigMoe } from "./big-moe.ts";

const { values } = parseArgs({
  options: {
    out: { type: "string" },
    experts: { type: "string", default: String(BIG_MOE_DEFAULTS.numExperts) },
    ff: { type: "string", default: String(BIG_MOE_DEFAULTS.expertFf) },
    topk: { type: "string", default: String(BIG_MOE_DEFAULTS.topK) },
    seed: { type: "string", default: String(BIG_MOE_DEFAULTS.seed) },
  },
});
if (!values.out) {
  console.error(
    "usage: npx tsx scripts/make-big-moe.ts --out PATH [--experts N] [--ff N] [--seed N]",
  );
  process.exit(2);
}
const bytes = buildBigMoe(new Uint8Array(readFileSync(SYNTHETIC_MODEL_PATH)), {
  name: BIG_MOE_DEFAULTS.name,
  numExperts: Number(values.experts),
  expertFf: Number(values.ff),
  topK: Number(values.topk),
  seed: Number(values.seed),
});
writeFileSync(values.out, bytes);
console.log(`wrote ${values.out}: ${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB`);
