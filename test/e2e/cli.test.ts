/**
 * The `flowserve` operator CLI end to end: the real bin/flowserve.mjs as a child process against
 * wrangler dev. Upload with progress (whole, and in parts resuming an upload), list, create and remove a deployment, read a request,
 * grep the metrics, follow the server's logs, and the server's message on an error.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { fileFingerprint } from "../../bin/cli/upload.mjs";
import { ADMIN_KEY, type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";
import { REPO_ROOT } from "../helpers/models.ts";

const MODEL_FILE = join(REPO_ROOT, "../shared/models/stories260K-f32.gguf");
const CLI = join(REPO_ROOT, "bin/flowserve.mjs");

let server: DevServer;

beforeAll(async () => {
  if (!existsSync(MODEL_FILE)) return;
  server = await startDevServer();
});

afterAll(async () => {
  await server?.stop();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function flowserve(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      cwd: REPO_ROOT,
      env: {
        ...process.env,
        FLOWSERVE_URL: server.url,
        FLOWSERVE_ADMIN_KEY: ADMIN_KEY,
        FLOWSERVE_API_KEY: LOCAL_KEY,
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin ?? "");
  });
}

/** The rows of a table whose first cell is `first`. */
function rowsStarting(table: string, first: string): string[][] {
  return table
    .split("\n")
    .map((l) => l.split(/\s{2,}/))
    .filter((cells) => cells[0] === first);
}

// the model file lives in the team folder next to the repository (skipped without it, like the
// other reference-model tests; scripts/test.mjs fails a CI run that lacks it)
describe.skipIf(!existsSync(MODEL_FILE))("flowserve CLI", () => {
  it("uploads a model with a progress bar, then lists it", async () => {
    const up = await flowserve(["models", "upload", MODEL_FILE, "--name", "s260k"]);
    expect(up.stderr).toMatch(/uploading s260k \[#+\] 100% {2}1\.1 MiB \/ 1\.1 MiB/);
    expect(up.code).toBe(0);
    expect(up.stdout).toMatch(/^uploaded s260k: llama, 1185376 bytes, context 512$/m);
    const ls = await flowserve(["models", "ls"]);
    expect(ls.code).toBe(0);
    expect(ls.stdout.split("\n")[0]).toMatch(/^NAME\s+SIZE\s+ARCH/);
    const [row] = rowsStarting(ls.stdout, "s260k");
    expect(row?.slice(1, 5)).toEqual(["1.1 MiB", "llama", "292800", "512"]);
    const json = JSON.parse((await flowserve(["models", "ls", "--json"])).stdout) as {
      data: { name: string }[];
    };
    expect(json.data.map((m) => m.name)).toContain("s260k");
  });

  it("uploads in parts, resuming the file's upload in progress", async () => {
    // stories260K followed by zeros (never read: GGUF tensors are found by offset) to 11 MiB + 7,
    // three parts at R2's smallest part size; the file is made here and deleted after
    const dir = mkdtempSync(join(tmpdir(), "flowserve-parts-"));
    const path = join(dir, "padded.gguf");
    const bytes = new Uint8Array(11 * 2 ** 20 + 7);
    bytes.set(readFileSync(MODEL_FILE));
    writeFileSync(path, bytes);
    try {
      // a client "lost" after storing part 2 of its upload
      const headers = { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "application/json" };
      const base = `${server.url}/api/models/s260k-parts/uploads`;
      const stat = statSync(path);
      const started = await fetch(base, {
        method: "POST",
        headers,
        body: JSON.stringify({
          size: stat.size,
          part_size: 5 * 2 ** 20,
          fingerprint: fileFingerprint(stat.size, stat.mtimeMs),
        }),
      });
      const { id } = (await started.json()) as { id: string };
      const part2 = await fetch(`${base}/${id}/parts/2`, {
        method: "PUT",
        headers,
        body: bytes.subarray(5 * 2 ** 20, 10 * 2 ** 20),
      });
      expect(part2.status).toBe(200);

      const up = await flowserve([
        "models",
        "upload",
        path,
        "--name",
        "s260k-parts",
        "--part-size",
        "5",
      ]);
      expect(up.stderr).toContain(`resuming upload ${id}: 1 of 3 parts stored`);
      const parts = [...up.stderr.matchAll(/uploading s260k-parts part (\d)\/3 .* (\d+)%/g)];
      expect(parts.map((m) => [m[1], m[2]])).toEqual([
        ["1", "90"],
        ["3", "100"],
      ]);
      expect(up.code).toBe(0);
      expect(up.stdout).toMatch(/^uploaded s260k-parts: llama, 11534343 bytes, context 512$/m);
      const left = (await (await fetch(base, { headers })).json()) as { data: unknown[] };
      expect(left.data).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("creates, lists and removes a deployment", async () => {
    const created = await flowserve(["deployments", "create", "s260k", "--instances", "2"]);
    expect(created.code).toBe(0);
    const id = /^created (dep_[0-9a-f]+) \(s260k, colocated, colocated:2, deepflow\)$/m.exec(
      created.stdout,
    )?.[1];
    expect(id).toBeDefined();
    const ls = await flowserve(["deployments", "ls"]);
    expect(rowsStarting(ls.stdout, id as string)[0]?.slice(1, 5)).toEqual([
      "s260k",
      "colocated",
      "deepflow",
      "colocated:2",
    ]);
    const rm = await flowserve(["deployments", "rm", id as string]);
    expect(rm.code).toBe(0);
    expect(rm.stdout.trim()).toBe(`deleted ${id}`);
    const after = await flowserve(["deployments", "ls"]);
    expect(rowsStarting(after.stdout, id as string)).toEqual([]);
  });

  it("scales a deployment by replacing it", async () => {
    const created = await flowserve(["deployments", "create", "s260k", "--json"]);
    const old = (JSON.parse(created.stdout) as { id: string }).id;
    const scaled = await flowserve(["deployments", "scale", old, "3"]);
    expect(scaled.code).toBe(0);
    const id = /^created (dep_[0-9a-f]+) \(s260k, colocated, colocated:3, deepflow\)$/m.exec(
      scaled.stdout,
    )?.[1];
    expect(scaled.stdout).toMatch(new RegExp(`^deleted ${old}$`, "m"));
    const ls = (await flowserve(["deployments", "ls"])).stdout;
    expect(rowsStarting(ls, old)).toEqual([]);
    expect(rowsStarting(ls, id as string)[0]?.[4]).toBe("colocated:3");
    expect((await flowserve(["deployments", "rm", id as string])).code).toBe(0);
  });

  it("shows a request made with fetch, finds it in the metrics and in the logs", async () => {
    const res = await fetch(`${server.url}/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "s260k", prompt: "Once upon a time", max_tokens: 6 }),
    });
    expect(res.status).toBe(200);
    await res.json();
    const rid = res.headers.get("x-request-id") as string;
    const got = await vi.waitUntil(
      async () => {
        const r = await flowserve(["requests", "get", rid]);
        return /^status {4}succeeded$/m.test(r.stdout) ? r : false;
      },
      { timeout: 15_000, interval: 200 },
    );
    expect(got.stdout).toMatch(new RegExp(`^id {8}${rid}$`, "m"));
    expect(got.stdout).toMatch(/^model {5}s260k$/m);
    expect(got.stdout).toMatch(/ colocated {2}succeeded {2}inst_\S+ {2}5 +6 /);

    const metrics = await vi.waitUntil(
      async () => {
        const r = await flowserve(["metrics", "--grep", "flowserve:requests_total"]);
        return r.stdout.includes('model="s260k"') ? r : false;
      },
      { timeout: 15_000, interval: 200 },
    );
    const lines = metrics.stdout.trim().split("\n");
    expect(lines.every((l) => l.includes("flowserve:requests_total"))).toBe(true);
    expect(lines).toContain(
      'flowserve:requests_total{model="s260k",kind="text_completion",status="succeeded"} 1',
    );

    // the dev server's own output, piped in as `npm start | flowserve logs` would
    const logs = await vi.waitUntil(
      async () => {
        const r = await flowserve(["logs", "--request", rid], server.output());
        return r.stdout.includes("task.finished") ? r : false;
      },
      { timeout: 15_000, interval: 200 },
    );
    const events = logs.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(" "));
    expect(events.map((e) => e[1])).toEqual([
      "request.received",
      "scheduler.decided",
      "task.first_token",
      "task.finished",
    ]);
    expect(events.every((e) => e[2] === rid)).toBe(true);
    expect(logs.stdout).toMatch(/ task\.finished \S+ .*status=succeeded .*numCompletionTokens=6/);
  });

  it("prints the server's message and exits 1 on an error, 2 on a usage error", async () => {
    const rm = await flowserve(["deployments", "rm", "dep_nope"]);
    expect(rm.code).toBe(1);
    expect(rm.stderr.trim()).toBe("flowserve: No deployment dep_nope.");
    const create = await flowserve(["deployments", "create", "no-such-model"]);
    expect(create.code).toBe(1);
    expect(create.stderr).toContain("The model `no-such-model` does not exist.");
    const missing = await flowserve(["models", "upload", join(REPO_ROOT, "no-such-file.gguf")]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/cannot read .*no-such-file\.gguf: ENOENT/);
    const bad = await flowserve(["models", "upload", join(REPO_ROOT, "package.json")]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^flowserve: .*GGUF/im);
    const usage = await flowserve(["deployments", "create"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/needs MODEL/);
  });
});
