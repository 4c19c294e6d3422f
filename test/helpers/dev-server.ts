/**
 * Starts `wrangler dev` (the same way `npm start` does, on a free port, with its own persisted
 * state folder) for end-to-end tests and benchmarks, and stops it by PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "./models.ts";

export interface DevServer {
  url: string;
  /** Everything wrangler and the worker printed so far (structured logs included). */
  output(): string;
  stop(): Promise<void>;
}

export const LOCAL_KEY = "sk-local-dev";
export const ADMIN_KEY = "sk-local-admin";

/** Starts `wrangler dev` on `state` (a fresh folder by default; a restart drill passes the last one). */
export async function startDevServer(
  extraVars: Record<string, string> = {},
  state = mkdtempSync(join(tmpdir(), "flowserve-dev-")),
): Promise<DevServer & { state: string }> {
  const vars = Object.entries({
    API_KEYS: `local:${LOCAL_KEY}`,
    ADMIN_API_KEYS: ADMIN_KEY,
    ...extraVars,
  }).flatMap(([k, v]) => ["--var", `${k}:${v}`]);
  const child: ChildProcess = spawn(
    join(REPO_ROOT, "node_modules/.bin/wrangler"),
    [
      "dev",
      "--ip",
      "127.0.0.1",
      "--port",
      "0",
      "--inspector-port",
      "0",
      "--show-interactive-dev-session=false",
      "--persist-to",
      state,
      ...vars,
    ],
    {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        WRANGLER_SEND_METRICS: "false",
        WRANGLER_SEND_ERROR_REPORTS: "false",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        NO_COLOR: "1",
        WRANGLER_LOG_PATH: join(state, "logs"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const out = captureOutput(child);
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`wrangler dev did not start:\n${out()}`)),
      60_000,
    );
    const check = setInterval(() => {
      const m = /Ready on (http:\/\/127\.0\.0\.1:\d+)/.exec(out());
      if (m) {
        clearInterval(check);
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    }, 50);
    child.on("exit", (code) => {
      clearInterval(check);
      clearTimeout(timer);
      reject(new Error(`wrangler dev exited with ${code}:\n${out()}`));
    });
  });
  return {
    url,
    state,
    output: out,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 5000).unref();
      }),
  };
}

/** The model id `uploadSyntheticModel` uploads models/synthetic-moe.gguf as. */
export const SYNTHETIC_MODEL = "synthetic-moe";

/**
 * Uploads the seeded synthetic MoE (models/synthetic-moe.gguf: a 768-token byte-fallback
 * vocabulary for general text, 8 experts, context 2048) to `server` as model `synthetic-moe`,
 * for end-to-end tests that need what the embedded lemma-chain model lacks. Idempotent: a
 * second upload replaces it. Returns the model id.
 */
export async function uploadSyntheticModel(server: DevServer): Promise<string> {
  const res = await fetch(`${server.url}/api/models/${SYNTHETIC_MODEL}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${ADMIN_KEY}` },
    body: readFileSync(join(REPO_ROOT, "models/synthetic-moe.gguf")),
  });
  if (res.status !== 201 && res.status !== 200) {
    throw new Error(`uploading ${SYNTHETIC_MODEL}: ${res.status} ${await res.text()}`);
  }
  return SYNTHETIC_MODEL;
}

/** Everything a child process writes to stdout and stderr so far. */
export function captureOutput(child: ChildProcess): () => string {
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d) => {
    out += d.toString();
  });
  return () => out;
}
