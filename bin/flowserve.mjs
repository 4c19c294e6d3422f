#!/usr/bin/env node
// `flowserve`: the operator CLI over the worker's /api routes, /metrics and its log lines.
// Plain ESM for Node 20 (no build step). The parsing and formatting live in bin/cli/ as pure
// functions; this file does the I/O. `flowserve --help` lists the commands.
import { spawn } from "node:child_process";
import { createReadStream, statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine, USAGE, UsageError } from "./cli/args.mjs";
import {
  deploymentsTable,
  errorMessage,
  instanceCounts,
  modelsTable,
  progressBar,
  requestText,
} from "./cli/format.mjs";
import { createJsonSplitter, createLogFilter, formatEntry, logEntries } from "./cli/logs.mjs";

/** A failure to report: the server's message (or ours), exit 1. */
class CliError extends Error {}

const out = (text) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
const err = (text) => process.stderr.write(text.endsWith("\n") ? text : `${text}\n`);

async function call(cmd, method, path, init = {}) {
  let res;
  try {
    res = await fetch(`${cmd.url}${path}`, {
      method,
      ...init,
      headers: { authorization: `Bearer ${cmd.key}`, ...init.headers },
    });
  } catch (e) {
    throw new CliError(`cannot reach ${cmd.url}: ${e?.cause?.message ?? e?.message ?? e}`);
  }
  const text = await res.text();
  if (!res.ok) throw new CliError(errorMessage(res.status, text));
  return text;
}

async function callJson(cmd, method, path, body) {
  const init =
    body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { "content-type": "application/json" } };
  return parseJson(await call(cmd, method, path, init));
}

/** A 2xx body that should be JSON; anything else is an error with the server's text. */
function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`the server answered with something other than JSON: ${text.slice(0, 200)}`);
  }
}

/** Progress on stderr: redrawn in place on a terminal, one line at the end otherwise. */
function progress(label, total) {
  const tty = process.stderr.isTTY === true;
  let last = 0;
  return {
    update(done) {
      const now = Date.now();
      if (tty && (now - last > 100 || done === total)) {
        last = now;
        process.stderr.write(`\r${progressBar(label, done, total)}`);
      }
    },
    end(done) {
      process.stderr.write(`${tty ? "\r" : ""}${progressBar(label, done, total)}\n`);
    },
  };
}

/** The file as a streamed body that counts the bytes fetch pulls from it. */
function countingStream(path, onBytes) {
  const file = createReadStream(path, { highWaterMark: 256 * 1024 });
  const it = file[Symbol.asyncIterator]();
  let sent = 0;
  return new ReadableStream({
    async pull(controller) {
      const { done, value } = await it.next();
      if (done) return controller.close();
      sent += value.byteLength;
      onBytes(sent);
      controller.enqueue(new Uint8Array(value.buffer, value.byteOffset, value.byteLength));
    },
    cancel() {
      file.destroy();
    },
  });
}

/** Statuses that say "send a Content-Length body, not a streamed one". */
const NO_STREAM_STATUSES = [411, 501, 505];

async function upload(cmd) {
  let total;
  try {
    total = statSync(cmd.path).size;
  } catch (e) {
    throw new CliError(`cannot read ${cmd.path}: ${e.code ?? e.message}`);
  }
  const url = `${cmd.url}/api/models/${encodeURIComponent(cmd.name)}`;
  const headers = {
    authorization: `Bearer ${cmd.key}`,
    "content-type": "application/octet-stream",
  };
  const bar = progress(`uploading ${cmd.name}`, total);
  let sent = 0;
  let res = null;
  try {
    const body = countingStream(cmd.path, (n) => {
      sent = n;
      bar.update(n);
    });
    res = await fetch(url, { method: "PUT", headers, body, duplex: "half" });
  } catch (e) {
    // fetch refused the streamed body before sending it: fall back below; else a lost connection
    if (sent > 0) throw new CliError(`upload to ${cmd.url} failed: ${e?.cause?.message ?? e}`);
  }
  if (res === null || NO_STREAM_STATUSES.includes(res.status)) {
    // send the file read into memory, with the progress of reading it
    await res?.body?.cancel();
    const reading = progress(`reading ${cmd.name}`, total);
    const bytes = await readFile(cmd.path);
    reading.end(bytes.byteLength);
    try {
      res = await fetch(url, { method: "PUT", headers, body: bytes });
    } catch (e) {
      throw new CliError(`cannot reach ${cmd.url}: ${e?.cause?.message ?? e?.message ?? e}`);
    }
    sent = bytes.byteLength;
  }
  bar.end(sent);
  const text = await res.text();
  if (!res.ok) throw new CliError(errorMessage(res.status, text));
  const m = parseJson(text);
  if (cmd.json) return out(JSON.stringify(m, null, 2));
  out(
    `uploaded ${m.id}: ${m.architecture ?? "?"}, ${m.size_bytes} bytes, context ${m.contextLength}`,
  );
}

function deploymentBody(model, mode, instances, scheduler) {
  return { model, mode, instances, scheduler };
}

function describeDeployment(d) {
  return `${d.id} (${d.model}, ${d.mode}, ${instanceCounts(d.instances)}, ${d.scheduler})`;
}

async function run(cmd) {
  switch (cmd.command) {
    case "models upload":
      return upload(cmd);
    case "models ls": {
      const list = await callJson(cmd, "GET", "/api/models");
      return out(cmd.json ? JSON.stringify(list, null, 2) : modelsTable(list.data));
    }
    case "deployments create": {
      const d = await callJson(
        cmd,
        "POST",
        "/api/deployments",
        deploymentBody(cmd.model, cmd.mode, cmd.instances, cmd.scheduler),
      );
      return out(cmd.json ? JSON.stringify(d, null, 2) : `created ${describeDeployment(d)}`);
    }
    case "deployments ls": {
      const list = await callJson(cmd, "GET", "/api/deployments");
      return out(cmd.json ? JSON.stringify(list, null, 2) : deploymentsTable(list.data));
    }
    case "deployments rm": {
      const r = await callJson(cmd, "DELETE", `/api/deployments/${encodeURIComponent(cmd.id)}`);
      return out(cmd.json ? JSON.stringify(r, null, 2) : `deleted ${r.id}`);
    }
    case "deployments scale": {
      // no scale route: a new deployment with the new counts, then the old one retired
      const old = await callJson(cmd, "GET", `/api/deployments/${encodeURIComponent(cmd.id)}`);
      const wantsPd = cmd.counts.colocated === undefined;
      if (wantsPd !== (old.mode === "pd")) {
        throw new UsageError(
          old.mode === "pd"
            ? `${old.id} is PD: deployments scale ${old.id} --prefill N --decode M`
            : `${old.id} is colocated: deployments scale ${old.id} N`,
        );
      }
      const created = await callJson(
        cmd,
        "POST",
        "/api/deployments",
        deploymentBody(old.model, old.mode, cmd.counts, old.scheduler),
      );
      const deleted = await callJson(
        cmd,
        "DELETE",
        `/api/deployments/${encodeURIComponent(old.id)}`,
      );
      if (cmd.json) return out(JSON.stringify({ created, deleted }, null, 2));
      return out(`created ${describeDeployment(created)}\ndeleted ${old.id}`);
    }
    case "requests get": {
      const r = await callJson(cmd, "GET", `/api/requests/${encodeURIComponent(cmd.id)}`);
      return out(cmd.json ? JSON.stringify(r, null, 2) : requestText(r));
    }
    case "metrics": {
      const text = await call(cmd, "GET", "/metrics");
      const lines = text.split("\n").filter((l) => l !== "");
      const kept = cmd.grep ? lines.filter((l) => cmd.grep.test(l)) : lines;
      if (kept.length > 0) out(kept.join("\n"));
      return;
    }
    case "logs":
      return logs(cmd);
  }
}

async function logs(cmd) {
  const keep = createLogFilter(cmd.filter);
  const split = createJsonSplitter();
  const print = (values) => {
    for (const e of values.flatMap(logEntries)) {
      if (keep(e)) out(cmd.json ? JSON.stringify(e) : formatEntry(e));
    }
  };
  let input = process.stdin;
  let child = null;
  let exited = null;
  if (cmd.tail) {
    const here = dirname(fileURLToPath(import.meta.url));
    const wrangler = join(here, "..", "node_modules", ".bin", "wrangler");
    child = spawn(wrangler, ["tail", "--format", "json", ...cmd.tailArgs], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    // listened for at once, so an early exit or a failed start is never missed
    exited = new Promise((resolve) => {
      child.once("exit", (code, signal) => resolve({ code, signal }));
      child.once("error", (e) => resolve({ error: e }));
    });
    input = child.stdout;
    process.on("SIGINT", () => child.kill("SIGINT"));
  }
  input.setEncoding("utf8");
  for await (const chunk of input) print(split.push(chunk));
  print(split.end());
  if (exited) {
    const r = await exited;
    if (r.error) throw new CliError(`cannot run wrangler tail: ${r.error.message}`);
    if (r.signal && r.signal !== "SIGINT") throw new CliError(`wrangler tail ended by ${r.signal}`);
    if (r.code) throw new CliError(`wrangler tail exited with ${r.code}`);
  }
}

async function main(argv) {
  let cmd;
  try {
    cmd = parseCommandLine(argv, process.env);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`flowserve: ${e.message}\nRun flowserve --help for the commands.`);
    return 2;
  }
  if (cmd.kind === "help") {
    out(USAGE);
    return 0;
  }
  try {
    await run(cmd);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      err(`flowserve: ${e.message}`);
      return 2;
    }
    if (e instanceof CliError) {
      err(`flowserve: ${e.message}`);
      return 1;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
