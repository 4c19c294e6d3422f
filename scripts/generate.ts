/**
 * Engine CLI: greedy or sampled generation from a GGUF, printing one JSON object on its last line.
 *
 *   npm run -s generate -- --model PATH --prompt TEXT --max-tokens N --temperature 0 --json [--ctx-size N]
 *
 * Without --model it runs the embedded default model. Uses the same shared/ engine and the same
 * wasm kernels that run in workerd.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { DEFAULT_MODEL_PATH, loadNodeInstance, runToCompletion } from "../hosts/node-engine.ts";
import { GREEDY } from "../shared/engine/sequence.ts";

function fail(msg: string): never {
  console.error(`error: ${msg}`);
  process.exit(1);
}

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    prompt: { type: "string", default: "" },
    "max-tokens": { type: "string", default: "64" },
    temperature: { type: "string", default: "0" },
    "top-p": { type: "string", default: "1" },
    "top-k": { type: "string", default: "0" },
    seed: { type: "string", default: "0" },
    "ctx-size": { type: "string" },
    kernels: { type: "string", default: "wasm" },
    json: { type: "boolean", default: false },
  },
  strict: true,
});

const num = (name: string, v: string | undefined, min: number): number => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) fail(`--${name} must be a number >= ${min}, got "${v}"`);
  return n;
};
const maxTokens = num("max-tokens", values["max-tokens"], 1);
const ctxSize =
  values["ctx-size"] === undefined ? undefined : num("ctx-size", values["ctx-size"], 2);
const kernels = values.kernels === "js" ? "js" : "wasm";

let bytes: Uint8Array;
const path = values.model ?? DEFAULT_MODEL_PATH;
try {
  bytes = new Uint8Array(readFileSync(path));
} catch (e) {
  fail(`cannot read model ${path}: ${(e as Error).message}`);
}

try {
  const inst = await loadNodeInstance(bytes, { kernels, maxModelLen: ctxSize, maxNumSeqs: 1 });
  const promptIds = inst.tokenizer.encode(values.prompt ?? "");
  if (promptIds.length >= inst.engine.maxModelLen) {
    fail(
      `prompt is ${promptIds.length} tokens but the context holds ${inst.engine.maxModelLen} ` +
        "(and at least one must be generated); use a shorter prompt or --ctx-size",
    );
  }
  const params = {
    ...GREEDY,
    temperature: num("temperature", values.temperature, 0),
    topP: num("top-p", values["top-p"], 0),
    topK: num("top-k", values["top-k"], 0),
    seed: num("seed", values.seed, 0),
    maxTokens,
  };
  const out = await runToCompletion(inst.engine, promptIds, params);
  if (!values.json) console.log(values.prompt + out.text);
  console.log(JSON.stringify({ prompt_ids: promptIds, ids: out.ids, text: out.text }));
} catch (e) {
  fail((e as Error).message);
}
