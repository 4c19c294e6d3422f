/**
 * Serves the worker as workerd runs it, without `wrangler dev`'s proxy: for benchmarks whose
 * numbers should not include a hop that production does not have.
 *
 * `wrangler dev` (what `npm start` and startDevServer run) puts a ProxyWorker in its own workerd
 * process in front of the user worker: each request is queued by that Durable Object and
 * re-fetched over loopback HTTP into the user worker's workerd process, and each streamed
 * response is also reported to wrangler's Node process. Here, instead:
 *
 *   1. the worker is bundled exactly as deploy would (`wrangler deploy --dry-run --outdir`: the
 *      JS bundle plus the .wasm and .gguf modules it imports);
 *   2. one Miniflare instance (one workerd process) serves that bundle on 127.0.0.1, with the
 *      bindings, vars, compatibility date and flags and module rules that wrangler derives from
 *      wrangler.toml (`unstable_getMiniflareWorkerOptions`): the three Durable Objects with
 *      SQLite storage, the R2 bucket MODELS, the vars;
 *   3. its state lives in a fresh temp folder, like startDevServer's --persist-to; the bundle
 *      and the state are removed on stop().
 *
 * The local keys are startDevServer's; `extraVars` override wrangler.toml's vars, as
 * startDevServer's `--var` does (LOG_LEVEL stays wrangler.toml's unless given). What the worker
 * prints (its structured log lines) and Miniflare's own warnings are kept for output(), not
 * printed; there is no line per request as wrangler dev prints. What wrangler dev adds and this
 * leaves out, as production does: its dev-only middleware (draining unread request bodies,
 * JSON error pages for uncaught exceptions), source-mapped stacks in logs, and live reload.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { Log, LogLevel, Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";
import { ADMIN_KEY, captureOutput, type DevServer, LOCAL_KEY } from "./dev-server.ts";
import { REPO_ROOT } from "./models.ts";

const WRANGLER_ENV = {
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_SEND_ERROR_REPORTS: "false",
  NO_COLOR: "1",
};

/** Output kept for output(): the last half megabyte once it passes a megabyte. */
class Output {
  #text = "";
  append(s: string): void {
    this.#text += s;
    if (this.#text.length > 1_000_000) this.#text = this.#text.slice(-500_000);
  }
  get text(): string {
    return this.#text;
  }
}

/** Miniflare's own log lines (warnings and errors) go to the server's output. */
class CapturedLog extends Log {
  constructor(private readonly out: Output) {
    super(LogLevel.WARN);
  }
  protected override log(message: string): void {
    this.out.append(`${message}\n`);
  }
}

/** `wrangler deploy --dry-run --outdir dir`: the bundle deploy would upload. */
async function bundle(dir: string, logsDir: string): Promise<void> {
  const child = spawn(
    join(REPO_ROOT, "node_modules/.bin/wrangler"),
    ["deploy", "--dry-run", "--outdir", dir],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, ...WRANGLER_ENV, WRANGLER_LOG_PATH: logsDir },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const out = captureOutput(child);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", resolve);
  });
  if (code !== 0) throw new Error(`wrangler deploy --dry-run exited with ${code}:\n${out()}`);
}

export async function startDirectServer(
  extraVars: Record<string, string> = {},
): Promise<DevServer> {
  const work = mkdtempSync(join(tmpdir(), "flowserve-direct-"));
  const out = new Output();
  let mf: Miniflare | null = null;
  const stop = async () => {
    const m = mf;
    mf = null;
    try {
      await m?.dispose();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  };
  try {
    const dist = join(work, "dist");
    await bundle(dist, join(work, "logs"));
    if (!readdirSync(dist).includes("index.js")) {
      throw new Error(`the dry-run bundle has no index.js: ${readdirSync(dist).join(", ")}`);
    }
    const { workerOptions, externalWorkers } = unstable_getMiniflareWorkerOptions(
      join(REPO_ROOT, "wrangler.toml"),
    );
    if (externalWorkers.length > 0) throw new Error("wrangler.toml binds external workers");
    mf = new Miniflare({
      host: "127.0.0.1",
      port: 0,
      // No request log lines, and the fallback `request.cf` instead of fetching one.
      logRequests: false,
      cf: false,
      log: new CapturedLog(out),
      handleRuntimeStdio(stdout: Readable, stderr: Readable) {
        stdout.on("data", (d: Buffer) => out.append(d.toString()));
        stderr.on("data", (d: Buffer) => out.append(d.toString()));
      },
      defaultPersistRoot: join(work, "state"),
      telemetry: { enabled: false },
      workers: [
        {
          ...workerOptions,
          // The bundle's entry; its imports of the .wasm and .gguf files are resolved by
          // wrangler.toml's [[rules]] (CompiledWasm, Data), passed in as modulesRules.
          modules: true,
          scriptPath: join(dist, "index.js"),
          modulesRoot: dist,
          bindings: {
            ...workerOptions.bindings,
            API_KEYS: `local:${LOCAL_KEY}`,
            ADMIN_API_KEYS: ADMIN_KEY,
            ...extraVars,
          },
        },
      ],
    });
    const url = await mf.ready;
    return { url: url.origin, output: () => out.text, stop };
  } catch (e) {
    await stop().catch(() => {});
    throw new Error(`the direct server did not start: ${(e as Error).message}\n${out.text}`);
  }
}
