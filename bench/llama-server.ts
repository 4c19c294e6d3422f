/**
 * Starts llama.cpp's `llama-server` on a free loopback port for the comparison in bench/api.ts,
 * waits until its /health answers 200, and stops it by PID.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";

export interface LlamaServer {
  url: string;
  /** The arguments it was started with. */
  args: string[];
  /** Everything it printed so far. */
  output(): string;
  stop(): Promise<void>;
}

export interface LlamaServerOptions {
  binary: string;
  model: string;
  /** Slots (`-np`): sequences decoded together. */
  slots: number;
  threads: number;
  /** Total context (`-c`); each slot gets ctx / slots. */
  ctx: number;
}

/** A port that was free on 127.0.0.1 a moment ago. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error("no free port"))));
    });
  });
}

export async function startLlamaServer(o: LlamaServerOptions): Promise<LlamaServer> {
  const port = await freePort();
  const args = [
    "-m",
    o.model,
    "--host",
    "127.0.0.1",
    "--port",
    String(port),
    "-np",
    String(o.slots),
    "-t",
    String(o.threads),
    "-c",
    String(o.ctx),
  ];
  const child: ChildProcess = spawn(o.binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const append = (d: Buffer) => {
    out += d.toString();
    if (out.length > 1_000_000) out = out.slice(-500_000); // it logs every request
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const stop = () =>
    new Promise<void>((resolve) => {
      if (gone()) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
      setTimeout(() => child.kill("SIGKILL"), 5000).unref();
    });
  const url = `http://127.0.0.1:${port}`;
  const exited = new Promise<never>((_, reject) => {
    child.once("error", (e) => reject(new Error(`llama-server did not start: ${e.message}`)));
    child.once("exit", (code, signal) =>
      reject(new Error(`llama-server exited (${code ?? signal}):\n${out.slice(-4000)}`)),
    );
  });
  exited.catch(() => {}); // observed below, or after a successful start (then ignored)
  try {
    await Promise.race([waitHealthy(url, 60_000, gone), exited]);
  } catch (e) {
    await stop();
    throw e;
  }
  return { url, args, output: () => out, stop };
}

/** Polls GET /health until it answers 200 (503 while the model loads). */
async function waitHealthy(url: string, timeoutMs: number, gone: () => boolean): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && !gone()) {
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`llama-server at ${url} was not healthy after ${timeoutMs / 1000} s`);
}
