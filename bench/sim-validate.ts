/**
 * The simulator against a measured run (issue 13): replays a short trace through the real
 * server, `bench:serve` against the direct server (test/helpers/direct-server.ts: the deploy
 * bundle on one workerd, no wrangler proxy; one instance of the checkpoint `--model-file`, default
 * models/synthetic-moe.gguf, uploaded unless it is the server's own default model), `--reps`
 * times with fresh prompt salts, and through the simulator (shared/sim/cluster.ts, one instance,
 * least-loaded) with the same arrivals and lengths (sim-run.ts scales them as bench:serve does).
 *
 * The card: this machine is shared, and its speed moves with the load (engine steps ~2.4x slower
 * at load 7 than at 4), so by default each repetition first measures its own card,
 * `profile:steps` (the engine terms) then `profile:path` (the serving path's, on a direct
 * server of its own), both on that checkpoint, from synthetic requests only (nothing fitted to
 * the trace), and simulates with it; `--card PATH` uses a fixed card instead, which must name the
 * same checkpoint (its `checkpoint` field, written by profile:steps). Prints, per metric (TTFT p50/p90, TPOT
 * p50/p90, throughput), the median of the measured repetitions and of the simulated ones, the
 * relative error (simulated / measured - 1), whether it is within `--tolerance`, the median of
 * the per-repetition errors (each simulation against its own run, `rel_error_paired`), and the
 * simulation with the engine terms only (serving-path fields at 0). One JSON object on the last
 * line. `--dump-requests FILE` writes every repetition's requests, measured beside simulated, one
 * JSON line each (joinedLines), to find which requests make a tail, and each repetition's card
 * beside it (FILE.card-N.json).
 *
 *   npm run -s sim:validate -- [--trace PATH] [--duration S] [--time-scale X | --rate R]
 *     [--seed N] [--ctx N] [--reps N] [--model-file PATH] [--card PATH] [--tolerance F]
 *     [--dump-requests FILE] [--json]
 */
import { spawn } from "node:child_process";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import type { RequestOutcome } from "../shared/sim/cluster.ts";
import { simulate } from "../shared/sim/cluster.ts";
import { type ModelCard, PATH_FIELDS } from "../shared/sim/cost-model.ts";
import { report, tpotMs } from "../shared/sim/report.ts";
import { ADMIN_KEY, LOCAL_KEY } from "../test/helpers/dev-server.ts";
import { startDirectServer } from "../test/helpers/direct-server.ts";
import { DEFAULT_MODEL_FILE } from "./model-file.ts";
import { atRate, atTimeScale, readCard, traceRequests } from "./sim-run.ts";
import { loadTrace, poissonArrivals } from "./traces.ts";

const { values } = parseArgs({
  options: {
    trace: { type: "string", default: "../shared/traces/azure-llm-2023-conv.csv" },
    duration: { type: "string", default: "20" },
    "time-scale": { type: "string" },
    rate: { type: "string" },
    seed: { type: "string", default: "1" },
    ctx: { type: "string", default: "512" },
    reps: { type: "string", default: "3" },
    card: { type: "string" },
    "model-file": { type: "string", default: DEFAULT_MODEL_FILE },
    tolerance: { type: "string", default: "0.15" },
    "dump-requests": { type: "string" },
    json: { type: "boolean", default: false },
  },
});
function fail(msg: string): never {
  console.error(`sim:validate: ${msg}`);
  process.exit(2);
}
function positive(name: string, v: string): number {
  const x = Number(v);
  if (!(x > 0) || !Number.isFinite(x)) fail(`--${name} must be a positive number, got ${v}`);
  return x;
}
if (values.rate !== undefined && values["time-scale"] !== undefined) {
  fail("give at most one of --rate and --time-scale");
}
const trace = values.trace;
const durationS = positive("duration", values.duration);
const rate = values.rate === undefined ? null : positive("rate", values.rate);
const timeScale = positive("time-scale", values["time-scale"] ?? "1");
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed) || seed < 0) fail("--seed must be a non-negative integer");
const ctx = positive("ctx", values.ctx);
const reps = positive("reps", values.reps);
const tolerance = positive("tolerance", values.tolerance);
const modelFile = values["model-file"];
const fixedCard = values.card === undefined ? null : readCard(values.card);
if (fixedCard && fixedCard.checkpoint !== basename(modelFile)) {
  fail(
    `${values.card} was measured on ${fixedCard.checkpoint ?? "an unnamed checkpoint"}, not ` +
      `${basename(modelFile)} (profile:steps --model ${modelFile} measures one)`,
  );
}
const log = (msg: string) => console.error(msg);

/** The metrics compared, and how to read each from a bench:serve or a simulator report. */
interface Metrics {
  ttft_p50: number | null;
  ttft_p90: number | null;
  tpot_p50: number | null;
  tpot_p90: number | null;
  throughput: number;
}
interface Reported {
  ttft_ms: { p50: number | null; p90: number | null };
  tpot_ms: { p50: number | null; p90: number | null };
  throughput_tokens_per_s: number;
}
const metrics = (r: Reported): Metrics => ({
  ttft_p50: r.ttft_ms.p50,
  ttft_p90: r.ttft_ms.p90,
  tpot_p50: r.tpot_ms.p50,
  tpot_p90: r.tpot_ms.p90,
  throughput: r.throughput_tokens_per_s,
});

/** Runs a tsx script; resolves with its last stdout line. */
function tsx(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("node_modules/.bin/tsx", args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    child.once("error", reject);
    child.once("exit", (code) => {
      const last = out.trim().split("\n").pop() ?? "";
      if (code !== 0) reject(new Error(`${args[0]} exited with ${code}: ${last}`));
      else resolve(last);
    });
  });
}

/** A card measured now: profile:steps, then profile:path on top of it. */
async function measureCard(path: string): Promise<ModelCard> {
  await tsx(["scripts/profile-steps.ts", "--model", modelFile, "--out", path]);
  const pathArgs = ["--card", path, "--model-file", modelFile, "--rounds", "8", "--write"];
  await tsx(["scripts/profile-path.ts", ...pathArgs]);
  return readCard(path);
}

/** One bench:serve run against `baseUrl`; its last stdout line (per request into `dump`). */
function serveOnce(
  baseUrl: string,
  salt: number,
  dump: string,
): Promise<Reported & Record<string, unknown>> {
  const args = [
    "bench/serve.ts",
    "--dump-requests",
    dump,
    "--base-url",
    baseUrl,
    "--api-key",
    LOCAL_KEY,
    "--admin-key",
    ADMIN_KEY,
    "--model-file",
    modelFile,
    "--trace",
    trace,
    "--duration",
    `${durationS}`,
    "--ctx",
    `${ctx}`,
    "--prompt-salt",
    `${salt}`,
    "--json",
    ...(rate === null
      ? ["--time-scale", `${timeScale}`]
      : ["--rate", `${rate}`, "--seed", `${seed}`]),
  ];
  return tsx(args).then((last) => JSON.parse(last) as Reported & Record<string, unknown>);
}

/** The simulator's requests: bench:serve's rows, lengths and arrivals. */
async function simRequests() {
  const durationMs = durationS * 1000;
  if (rate !== null) {
    const n = poissonArrivals(rate, seed, durationMs).length;
    return atRate(await traceRequests(trace, n, seed, ctx), rate, "poisson", seed, durationMs);
  }
  const inWindow = await loadTrace(
    trace,
    (_i, relMs) => relMs >= 0 && relMs / timeScale < durationMs,
  );
  const tr = await traceRequests(trace, inWindow.rows.length, seed, ctx);
  return atTimeScale(tr, timeScale, durationMs);
}

function simulated(
  c: ModelCard,
  requests: Awaited<ReturnType<typeof simRequests>>,
): { metrics: Metrics; outcomes: RequestOutcome[] } {
  const r = simulate(requests, { card: c, numInstances: 1, policy: "least-loaded" });
  const failed = r.outcomes.filter((o) => o.failure !== null).length;
  if (failed > 0) fail(`${failed} simulated requests failed (the card's shape is too small)`);
  return {
    metrics: metrics(report(r.outcomes, { ttftMs: 1e9, tpotMs: 1e9 }, r.busyMs)),
    outcomes: r.outcomes,
  };
}

/**
 * `--dump-requests`: bench:serve's per-request lines of one repetition joined with the simulated
 * outcome of the same trace row (`r<row>`), one JSON line each: lengths, arrival, measured and
 * simulated TTFT / TPOT / e2e, and the measured TTFT's rank within the run (1 = slowest).
 */
function joinedLines(rep: number, servedDump: string, sim: readonly RequestOutcome[]): string {
  const byId = new Map(sim.map((o) => [o.id, o]));
  const rows = readFileSync(servedDump, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, number | null> & { row: number });
  const ranked = rows
    .filter((r) => typeof r.ttft_ms === "number")
    .sort((x, y) => (y.ttft_ms as number) - (x.ttft_ms as number));
  const rank = new Map(ranked.map((r, i) => [r.row, i + 1]));
  const r2 = (x: number | null) => (x === null ? null : Number(x.toFixed(2)));
  return rows
    .map((m) => {
      const o = byId.get(`r${m.row}`);
      const simTtft = o?.firstTokenMs == null ? null : o.firstTokenMs - o.arrivalMs;
      const simE2e = o?.finishMs == null ? null : o.finishMs - o.arrivalMs;
      return `${JSON.stringify({
        rep,
        ...m,
        ttft_rank: rank.get(m.row) ?? null,
        sim_arrival_ms: o ? r2(o.arrivalMs) : null,
        sim_ttft_ms: r2(simTtft),
        sim_tpot_ms: o ? r2(tpotMs(o)) : null,
        sim_e2e_ms: r2(simE2e),
      })}\n`;
    })
    .join("");
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

const requests = await simRequests();
const zeroPath = (c: ModelCard): ModelCard => ({
  ...c,
  ...Object.fromEntries(PATH_FIELDS.map((f) => [f, 0])),
  pathSharesThread: false,
});
const tmp = mkdtempSync(join(tmpdir(), "sim-validate-"));
const dumpPath = values["dump-requests"] ?? null;
if (dumpPath) writeFileSync(dumpPath, "");
log(`${requests.length} requests; starting the direct server ...`);
const server = await startDirectServer();
const measured: Metrics[] = [];
const sims: Metrics[] = [];
const engineOnly: Metrics[] = [];
const cards: ModelCard[] = [];
const loads: number[] = [];
try {
  for (let i = 0; i < reps; i++) {
    const card = fixedCard ?? (await measureCard(join(tmp, `card-${i}.json`)));
    cards.push(card);
    const before = loadavg()[0] as number;
    const servedDump = join(tmp, `served-${i}.jsonl`);
    const r = await serveOnce(server.url, 1000 + i, servedDump);
    loads.push(Number(((before + (loadavg()[0] as number)) / 2).toFixed(2)));
    if (r.failed !== 0) fail(`measured run ${i + 1}: ${r.failed} requests failed`);
    measured.push(metrics(r));
    const sim = simulated(card, requests);
    sims.push(sim.metrics);
    engineOnly.push(simulated(zeroPath(card), requests).metrics);
    if (dumpPath) {
      appendFileSync(dumpPath, joinedLines(i + 1, servedDump, sim.outcomes));
      writeFileSync(`${dumpPath}.card-${i + 1}.json`, `${JSON.stringify(card, null, 2)}\n`);
    }
    log(
      `run ${i + 1}/${reps} (load ${loads.at(-1)}): measured ${JSON.stringify(measured.at(-1))}, ` +
        `simulated ${JSON.stringify(sims.at(-1))}`,
    );
  }
} finally {
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
}
const med = (runs: Metrics[], k: keyof Metrics): number | null => {
  const xs = runs.flatMap((r) => (r[k] === null ? [] : [r[k] as number]));
  return xs.length > 0 ? Number(median(xs).toFixed(3)) : null;
};
const keys = Object.keys(measured[0] as Metrics) as (keyof Metrics)[];
const rows = keys.map((k) => {
  const m = med(measured, k);
  const sim = med(sims, k);
  const err = m && sim !== null ? sim / m - 1 : null;
  // each repetition's simulation against its own measured run (the card measured next to it)
  const paired = measured.flatMap((r, i) => {
    const x = r[k];
    const y = (sims[i] as Metrics)[k];
    return x && y !== null ? [y / x - 1] : [];
  });
  return {
    metric: k,
    measured: m,
    simulated: sim,
    rel_error: err === null ? null : Number(err.toFixed(3)),
    rel_error_paired: paired.length > 0 ? Number(median(paired).toFixed(3)) : null,
    within: err !== null && Math.abs(err) <= tolerance,
    engine_only: med(engineOnly, k),
  };
});
if (!values.json) {
  console.log("metric      measured  simulated  error    ok   paired   engine-only");
  const pct = (x: number | null) => (x === null ? "-" : `${(x * 100).toFixed(1)}%`);
  for (const r of rows) {
    console.log(
      `${r.metric.padEnd(11)} ${String(r.measured).padEnd(9)} ${String(r.simulated).padEnd(10)} ` +
        `${pct(r.rel_error).padEnd(8)} ${r.within ? "yes" : "no "}  ` +
        `${pct(r.rel_error_paired).padEnd(8)} ${r.engine_only}`,
    );
  }
}
const fields = ["b", ...PATH_FIELDS] as const;
console.log(
  JSON.stringify({
    rows,
    all_within: rows.every((r) => r.within),
    tolerance,
    measured,
    simulated: sims,
    cards: cards.map((c) => ({
      ...Object.fromEntries(fields.map((f) => [f, c[f] ?? 0])),
      idleRequestOverheadMs: c.idleRequestOverheadMs ?? null,
      requestJitterMs: c.requestJitterMs ?? null,
    })),
    loadavg_1m: loads,
    config: {
      trace: trace.split("/").pop(),
      requests: requests.length,
      duration_s: durationS,
      rate,
      time_scale: rate === null ? timeScale : null,
      seed: rate === null ? null : seed,
      ctx,
      reps,
      model_file: modelFile,
      card: values.card ?? "measured per repetition",
    },
  }),
);
