/**
 * Scaling benchmark: how long a deployment takes from 0 to N serving instances, for N in
 * {1, 8, 64} and each load path: `r2` (every instance reads the GGUF from R2, on fresh Npus),
 * `staged` (from the model's WeightCache, staged ahead), `fork` (a tree broadcast from the
 * model's serving instance, fresh Npus) and `pool-fork` (the same tree on Npus leased from the
 * pre-warmed pool). Reports the time until all N serve (from the scale request to the last
 * instance's announce, server clock), the mean and max of each scale-up step, and bytes read per
 * weight tier. Models: the default model, and a generated checkpoint of about 43 MB
 * (scripts/make-scale-model.ts, seeded, built in memory, uploaded as `scale-43mb`) for N in
 * {1, 8} (64 instances of it would need about 6 GB in one local process).
 *
 * Local R2 is a file on this machine's disk, far faster than object storage over a network: the
 * JSON also carries a production estimate of the R2 read at an assumed bandwidth (see README).
 *
 *   npm run -s bench:scale -- --json [--sizes 1,8,64] [--paths r2,staged,fork,pool-fork]
 *                                    [--big-sizes 1,8] [--no-big] [--repeat 5]
 *
 * With --repeat R, each model runs its paths R times in turn (r2, staged, fork, ..., r2, ...) so
 * that load on the machine falls on every path alike; each result is the run with the median
 * time until all serve, with every run's time in `runsMs`.
 *
 * Prints one JSON object on its last line.
 */
import { parseArgs } from "node:util";
import { buildScaleModel } from "../scripts/make-scale-model.ts";
import { ADMIN_KEY, type DevServer } from "../test/helpers/dev-server.ts";
import { startDirectServer } from "../test/helpers/direct-server.ts";
import { REPO_ROOT } from "../test/helpers/models.ts";

const { values } = parseArgs({
  options: {
    json: { type: "boolean", default: false },
    sizes: { type: "string", default: "1,8,64" },
    "big-sizes": { type: "string", default: "1,8" },
    paths: { type: "string", default: "r2,staged,fork,pool-fork" },
    "no-big": { type: "boolean", default: false },
    repeat: { type: "string", default: "1" },
  },
});

const POOL_SIZE = 64;
/** Assumed production R2 read bandwidth per stream (README: "Scaling"). */
const R2_BYTES_PER_S = 100e6;
const STEPS = ["reserve", "preload", "load", "warmup", "announce"] as const;

interface Instance {
  id: string;
  state: string;
  fromPool: boolean;
  stepsMs: Partial<Record<(typeof STEPS)[number], number>>;
  bytesByTier: { r2: number; staged: number; fork: number };
  createdAt: number;
  servingAt: number | null;
}

let server: DevServer;

async function api(path: string, init: RequestInit = {}): Promise<unknown> {
  const go = () =>
    fetch(`${server.url}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" },
    });
  // a request on a kept-alive connection that the local runtime had closed fails with
  // ECONNRESET, or "other side closed" (UND_ERR_SOCKET) after the 43 MB upload: it is sent once
  // more, on a new connection
  const res = await go().catch((e: unknown) => {
    const code = (e as { cause?: { code?: string } }).cause?.code;
    if (code !== "ECONNRESET" && code !== "UND_ERR_SOCKET") throw e;
    return go();
  });
  const body = await res.json();
  if (!res.ok)
    throw new Error(`${init.method ?? "GET"} ${path}: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(f: () => Promise<T | null>, timeoutMs: number, what: string): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (v !== null) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Waits until the pool holds `n` warm Npus (it refills in the background). */
async function poolReady(n: number): Promise<void> {
  await waitFor(
    async () => {
      const p = (await api("/api/pool?fill=1")) as { data: { state: string }[] };
      return p.data.filter((x) => x.state === "warm").length >= n ? true : null;
    },
    120_000,
    "the pool",
  );
}

async function run(model: string, path: string, n: number) {
  // every run starts with the pool full: no refill (runtimes instantiated, arenas committed on
  // workerd's one thread) runs behind a measured scale-up
  await poolReady(POOL_SIZE);
  const d = (await api("/api/deployments", {
    method: "POST",
    body: JSON.stringify({
      model,
      mode: "colocated",
      instances: { colocated: 0 },
      min_instances: 0,
      max_instances: n,
    }),
  })) as { id: string };
  const t0 = Date.now();
  // the answer comes once all N serve (no polling while the instances load)
  await api(`/api/deployments/${d.id}/scale`, {
    method: "POST",
    body: JSON.stringify({ instances: n, load_path: path, wait: true }),
  });
  const view = (await api(`/api/deployments/${d.id}`)) as { instances: Instance[] };
  const instances = view.instances;
  if (instances.length !== n || instances.some((i) => i.state !== "serving")) {
    const states = JSON.stringify(instances.filter((i) => i.state !== "serving"));
    throw new Error(`${model} ${path} ${n}: not all instances serve: ${states}`);
  }
  const allServingMs = Math.max(...instances.map((i) => i.servingAt as number)) - t0;
  const steps = Object.fromEntries(
    STEPS.map((s) => {
      const xs = instances.map((i) => i.stepsMs[s] ?? 0);
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      return [s, { meanMs: Math.round(mean * 10) / 10, maxMs: Math.max(...xs) }];
    }),
  );
  const bytesByTier = { r2: 0, staged: 0, fork: 0 };
  for (const i of instances) {
    bytesByTier.r2 += i.bytesByTier.r2;
    bytesByTier.staged += i.bytesByTier.staged;
    bytesByTier.fork += i.bytesByTier.fork;
  }
  await api(`/api/deployments/${d.id}`, { method: "DELETE" });
  return {
    model,
    path,
    n,
    allServingMs,
    fromPool: instances.filter((i) => i.fromPool).length,
    steps,
    bytesByTier,
  };
}

async function main() {
  server = await startDirectServer({ POOL_SIZE: String(POOL_SIZE), LOG_LEVEL: "warn" });
  const results: (Awaited<ReturnType<typeof run>> & { runsMs: number[] })[] = [];
  const models: { name: string; sizeBytes: number; sizes: number[] }[] = [];
  try {
    // the big model is uploaded first: a 43 MB body arriving while the pool fills (64 runtimes
    // instantiated on workerd's one thread) has had its connection reset locally
    let big: { name: string; sizeBytes: number; sizes: number[] } | null = null;
    if (!values["no-big"]) {
      const bytes = buildScaleModel(REPO_ROOT);
      const res = await fetch(`${server.url}/api/models/scale-43mb`, {
        method: "PUT",
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
        body: new Blob([bytes as Uint8Array<ArrayBuffer>]),
      }).catch(async (e: unknown) => {
        // on a loaded machine the local runtime has closed the connection after storing the
        // upload and before its answer: the registry says whether it arrived
        const info = (await api("/api/models")) as { data: { name: string; sizeBytes: number }[] };
        if (info.data.some((m) => m.name === "scale-43mb" && m.sizeBytes === bytes.byteLength)) {
          return null;
        }
        throw e;
      });
      if (res && !res.ok) throw new Error(`upload: ${res.status} ${await res.text()}`);
      const bigSizes = (values["big-sizes"] as string).split(",").map(Number);
      big = { name: "scale-43mb", sizeBytes: bytes.byteLength, sizes: bigSizes };
    }
    const list = (await api("/v1/models")) as { data: { id: string }[] };
    const def = list.data.find((m) => m.id !== "scale-43mb")?.id as string;
    const info = (await api(`/api/models`)) as { data: { name: string; sizeBytes: number }[] };
    const defSize = info.data.find((m) => m.name === def)?.sizeBytes ?? 0;
    const sizes = (values.sizes as string).split(",").map(Number);
    models.push({ name: def, sizeBytes: defSize, sizes });
    if (big) models.push(big);
    const paths = (values.paths as string).split(",");
    for (const m of models) {
      // the staged tier is filled ahead, as for a model expected to scale
      await api(`/api/models/${m.name}/stage`, { method: "POST" });
      // the model's default deployment serves: it is the fork source
      await waitFor(
        async () => {
          const ds = (await api("/api/deployments")) as {
            data: { model: string; instances: { state: string }[] }[];
          };
          const src = ds.data.find((x) => x.model === m.name);
          return src?.instances.some((i) => i.state === "serving") ? true : null;
        },
        60_000,
        `a serving instance of ${m.name}`,
      );
      const runs = new Map<string, Awaited<ReturnType<typeof run>>[]>();
      for (let rep = 0; rep < Number(values.repeat); rep++) {
        for (const path of paths) {
          for (const n of m.sizes) {
            const r = await run(m.name, path, n);
            runs.set(`${path}/${n}`, [...(runs.get(`${path}/${n}`) ?? []), r]);
            if (!values.json) console.log(JSON.stringify(r));
          }
        }
      }
      for (const rs of runs.values()) {
        const sorted = [...rs].sort((a, b) => a.allServingMs - b.allServingMs);
        const median = sorted[(sorted.length - 1) >> 1] as (typeof rs)[number];
        results.push({ ...median, runsMs: rs.map((r) => r.allServingMs) });
      }
    }
  } catch (e) {
    console.error(server.output().slice(-4000));
    throw e;
  } finally {
    await server.stop();
  }
  const ms = (name: string, path: string, n: number) =>
    results.find((r) => r.model === name && r.path === path && r.n === n)?.allServingMs ?? null;
  const summary = models.map((m) => {
    const n = Math.max(...m.sizes);
    const cold = ms(m.name, "r2", n);
    const fork = ms(m.name, "fork", n);
    return {
      model: m.name,
      sizeBytes: m.sizeBytes,
      n,
      coldOverFork: cold !== null && fork ? Math.round((cold / fork) * 100) / 100 : null,
      productionR2ReadMsPerInstance: Math.round((m.sizeBytes / R2_BYTES_PER_S) * 1000),
    };
  });
  console.log(
    JSON.stringify({
      bench: "scale",
      poolSize: POOL_SIZE,
      assumedR2BytesPerS: R2_BYTES_PER_S,
      results,
      summary,
    }),
  );
}

await main();
