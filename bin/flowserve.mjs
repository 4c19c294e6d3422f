#!/usr/bin/env node
// `flowserve`: the operator CLI over the worker's /api routes, /metrics and its log lines.
// Plain ESM for Node 20 (no build step). The parsing, formatting and upload planning live in
// bin/cli/ as pure functions; this file, bin/cli/http.mjs and bin/cli/upload-io.mjs do the I/O.
// `flowserve --help` lists the commands.
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseCommandLine, USAGE, UsageError } from "./cli/args.mjs";
import { deploymentsTable, instanceCounts, modelsTable, requestText } from "./cli/format.mjs";
import { CliError, call, callJson, err, out } from "./cli/http.mjs";
import { createJsonSplitter, createLogFilter, formatEntry, logEntries } from "./cli/logs.mjs";
import { upload } from "./cli/upload-io.mjs";

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
