/**
 * DeepFlow's placement against the baselines on one trace: starts one `wrangler dev`, creates
 * three colocated deployments of the same model with the same number of instances, one per
 * policy (deepflow, round-robin, least-loaded), and replays the same trace (same seed, same
 * prompts) against each with bench:serve, one after the other. Prints a JSON object with each
 * policy's bench:serve result and the goodput ratios on its last line.
 *
 *   npm run -s bench:compare -- --trace ../shared/traces/mooncake-conversation.jsonl [--instances 3]
 *     [--model-file PATH | --model NAME] [--rate R] [--duration S] [--slo-ttft-ms A]
 *     [--slo-tpot-ms B] [--ctx N] [--kv-cache-mb N] [--policies P,P,...]
 *     [--dump-requests PREFIX] [--json]   (PREFIX.POLICY.jsonl: bench:serve's per-request dump)
 *
 * `--kv-cache-mb N` starts the server with `NPU_KV_CACHE_MB` = N (each instance's KV share of its
 * arena; default the config's, 8). The output's `kv_blocks` is what the instances really got: the
 * `numBlocks` of each model.loaded log line (`profile:steps --kv-cache-mb N` derives the same count
 * for a simulator card), and `load_average` the machine's 1-minute load before and after each pass.
 * `--policies` sets the passes' order (default deepflow,round-robin,least-loaded): on a shared
 * machine whose load drifts, a second run in the reverse order shows how much the order moved.
 *
 * The model: the checkpoint `--model-file` (default models/synthetic-moe.gguf), uploaded first
 * unless it is the server's own default model (bench/model-file.ts); `--model NAME` alone serves
 * a model the server already has.
 */
import { execFileSync } from "node:child_process";
import { loadavg } from "node:os";
import { parseArgs } from "node:util";
import { SCHEDULER_POLICIES, type SchedulerPolicy } from "../shared/types/deployments.ts";
import { ADMIN_KEY, LOCAL_KEY, startDevServer } from "../test/helpers/dev-server.ts";
import { DEFAULT_MODEL_FILE, serveModelFile } from "./model-file.ts";

const { values } = parseArgs({
  options: {
    trace: { type: "string", default: "../shared/traces/mooncake-conversation.jsonl" },
    model: { type: "string" },
    "model-file": { type: "string" },
    instances: { type: "string", default: "3" },
    rate: { type: "string" },
    duration: { type: "string", default: "20" },
    "slo-ttft-ms": { type: "string", default: "500" },
    "slo-tpot-ms": { type: "string", default: "100" },
    ctx: { type: "string", default: "2048" },
    "kv-cache-mb": { type: "string" },
    policies: { type: "string", default: "deepflow,round-robin,least-loaded" },
    "time-scale": { type: "string" },
    "dump-requests": { type: "string" },
    json: { type: "boolean", default: false },
  },
});

const policies = values.policies.split(",") as SchedulerPolicy[];
for (const p of policies) {
  if (!SCHEDULER_POLICIES.includes(p)) {
    throw new Error(`--policies: unknown policy ${p} (one of ${SCHEDULER_POLICIES.join(", ")})`);
  }
}

// the scaled trace's prompts are at most --ctx tokens and its hash blocks ~16: index every block
const vars: Record<string, string> = { PREFIX_INDEX_TOKENS: "16" };
if (values["kv-cache-mb"] !== undefined) vars.NPU_KV_CACHE_MB = values["kv-cache-mb"];
const server = await startDevServer(vars);

/** The numBlocks of every model.loaded log line for `model` the server printed so far. */
function loadedBlocks(model: string): number[] {
  return server
    .output()
    .split("\n")
    .filter((l) => l.includes('"event":"model.loaded"'))
    .flatMap((l) => {
      try {
        return [JSON.parse(l.slice(l.indexOf("{"))) as { model: string; numBlocks: number }];
      } catch {
        return []; // a line interleaved with other output: not counted
      }
    })
    .filter((e) => e.model === model)
    .map((e) => e.numBlocks);
}
const round2 = (x: number) => Math.round(x * 100) / 100;
try {
  const model =
    values.model ??
    (
      await serveModelFile(
        server.url,
        { apiKey: LOCAL_KEY, adminKey: ADMIN_KEY },
        values["model-file"] ?? DEFAULT_MODEL_FILE,
      )
    ).model;
  const results: Record<string, Record<string, unknown>> = {};
  const load: Record<string, [number, number]> = {};
  // the first pass only warms the JIT (its numbers are discarded); then one pass per policy
  for (const policy of ["warm-up", ...policies]) {
    // a pooled keep-alive connection may have been closed by the dev server: retry once
    const create = () =>
      fetch(`${server.url}/api/deployments`, {
        method: "POST",
        headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
        body: JSON.stringify({
          model,
          mode: "colocated",
          instances: { colocated: Number(values.instances) },
          scheduler: policy === "warm-up" ? "least-loaded" : policy,
        }),
      });
    const res = await create().catch(() => create());
    if (!res.ok) throw new Error(`cannot create a ${policy} deployment: ${await res.text()}`);
    const { id } = (await res.json()) as { id: string };
    const args = [
      "run",
      "-s",
      "bench:serve",
      "--",
      "--base-url",
      server.url,
      "--admin-key",
      ADMIN_KEY,
      "--model",
      model,
      "--deployment",
      id,
      "--trace",
      values.trace as string,
      "--duration",
      values.duration as string,
      "--slo-ttft-ms",
      values["slo-ttft-ms"] as string,
      "--slo-tpot-ms",
      values["slo-tpot-ms"] as string,
      "--ctx",
      values.ctx as string,
      "--seed",
      "1",
      "--prompt-salt",
      "7",
      "--json",
    ];
    if (values.rate) args.push("--rate", values.rate);
    if (values["time-scale"]) args.push("--time-scale", values["time-scale"]);
    if (values["dump-requests"] && policy !== "warm-up")
      args.push("--dump-requests", `${values["dump-requests"]}.${policy}.jsonl`);
    const loadBefore = round2(loadavg()[0] as number);
    const out = execFileSync("npm", args, { encoding: "utf8", maxBuffer: 64 * 2 ** 20 });
    load[policy] = [loadBefore, round2(loadavg()[0] as number)];
    const last = out.trim().split("\n").at(-1) as string;
    if (policy !== "warm-up") results[policy] = JSON.parse(last) as Record<string, unknown>;
    if (!values.json) console.log(policy, last);
  }
  const goodput = (p: string) => Number(results[p]?.goodput_requests_per_s ?? Number.NaN);
  const ratio = (p: string, q: string) => {
    const r = goodput(p) / goodput(q);
    return Number.isFinite(r) ? +r.toFixed(3) : null; // null: a policy was not run
  };
  console.log(
    JSON.stringify({
      trace: values.trace,
      instances: Number(values.instances),
      kv_cache_mb: values["kv-cache-mb"] === undefined ? null : Number(values["kv-cache-mb"]),
      kv_blocks: loadedBlocks(model),
      load_average: load,
      results,
      goodput_deepflow_over_round_robin: ratio("deepflow", "round-robin"),
      goodput_deepflow_over_least_loaded: ratio("deepflow", "least-loaded"),
    }),
  );
} finally {
  await server.stop();
}
