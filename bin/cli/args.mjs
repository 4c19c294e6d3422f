// The `flowserve` command line as data: which command, its arguments, the base URL and the key.
// Pure (argv and the environment in, a plan or a UsageError out), so that
// test/unit/cli-args.test.ts can check it without a server.
import { parseArgs } from "node:util";

export const DEFAULT_URL = "http://127.0.0.1:8787";

export const USAGE = `flowserve: operate a flowserve worker through its /api routes

Usage: flowserve <command> [options]

Commands:
  models upload PATH [--name NAME] [--part-size MB]
                                     upload a GGUF (NAME defaults to the file name without
                                     .gguf), with progress on stderr: one PUT /api/models/NAME,
                                     or parts of MB MiB (at least 5; default the server's body
                                     limit) past MB or 64 MiB; run again to resume a broken one
  models ls                          registered models (GET /api/models)
  deployments create MODEL [--mode colocated|pd] [--instances N | --prefill N --decode M]
                     [--scheduler deepflow|round-robin|least-loaded]
  deployments ls                     deployments with their instances and load
  deployments rm ID                  retire a deployment (running tasks finish)
  deployments scale ID N             (PD: deployments scale ID --prefill N --decode M)
                                     there is no scale route: this creates a new deployment of
                                     the same model, mode and scheduler with the new counts,
                                     then retires the old one; the new one has a new id
  requests get ID                    a request with its jobs and tasks (tenant key)
  metrics [--grep PATTERN]           GET /metrics; PATTERN (a regular expression) keeps lines
  logs [--tail] [--request ID] [--model NAME] [--event NAME]... [-- WRANGLER_TAIL_ARGS]
                                     follow JSON log lines from stdin (npm start | flowserve
                                     logs), or from \`wrangler tail --format json\` with --tail

Options:
  --url URL     the worker (default $FLOWSERVE_URL, else ${DEFAULT_URL})
  --key KEY     the bearer key (default $FLOWSERVE_ADMIN_KEY for admin commands and metrics,
                $FLOWSERVE_API_KEY for requests get)
  --json        print the server's JSON (logs: the matching log objects, one per line)
  -h, --help    this text

Errors print the server's message and exit 1; usage errors exit 2.
`;

export class UsageError extends Error {
  constructor(message) {
    super(message);
    this.name = "UsageError";
  }
}

const OPTIONS = {
  url: { type: "string" },
  key: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
  name: { type: "string" },
  "part-size": { type: "string" },
  mode: { type: "string" },
  instances: { type: "string" },
  prefill: { type: "string" },
  decode: { type: "string" },
  scheduler: { type: "string" },
  grep: { type: "string" },
  tail: { type: "boolean" },
  request: { type: "string" },
  model: { type: "string" },
  event: { type: "string", multiple: true },
};

const GLOBAL = ["url", "key", "json", "help"];

/** Per command: its positional arguments, its own options and which key it takes. */
const COMMANDS = {
  "models upload": { positionals: ["PATH"], options: ["name", "part-size"], key: "admin" },
  "models ls": { positionals: [], options: [], key: "admin" },
  "deployments create": {
    positionals: ["MODEL"],
    options: ["mode", "instances", "prefill", "decode", "scheduler"],
    key: "admin",
  },
  "deployments ls": { positionals: [], options: [], key: "admin" },
  "deployments rm": { positionals: ["ID"], options: [], key: "admin" },
  "deployments scale": {
    positionals: ["ID", "N?"],
    options: ["prefill", "decode"],
    key: "admin",
  },
  "requests get": { positionals: ["ID"], options: [], key: "tenant" },
  metrics: { positionals: [], options: ["grep"], key: "admin" },
  logs: { positionals: [], options: ["tail", "request", "model", "event"], key: null },
};

// The server's lists (shared/types/deployments.ts), repeated because this runs without a build:
// a value the server adds later is refused here until this list learns it.
const MODES = ["colocated", "pd"];
const SCHEDULERS = ["deepflow", "round-robin", "least-loaded"];

function count(flag, value) {
  if (!/^[1-9][0-9]*$/.test(value ?? "")) {
    throw new UsageError(`--${flag} takes a positive whole number, not ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function oneOf(flag, value, allowed) {
  if (!allowed.includes(value)) {
    throw new UsageError(`--${flag} is one of ${allowed.join(", ")}, not ${JSON.stringify(value)}`);
  }
  return value;
}

/** The instance counts of `deployments create`, as the API's `mode` and `instances`. */
function deploymentShape(v, modeGiven) {
  const pdFlags = v.prefill !== undefined || v.decode !== undefined;
  const mode = oneOf("mode", modeGiven ?? (pdFlags ? "pd" : "colocated"), MODES);
  if (mode === "colocated") {
    if (pdFlags) throw new UsageError("--prefill and --decode are for --mode pd");
    return { mode, instances: { colocated: count("instances", v.instances ?? "1") } };
  }
  if (v.instances !== undefined) {
    throw new UsageError("a PD deployment takes --prefill N --decode M, not --instances");
  }
  if (v.prefill === undefined || v.decode === undefined) {
    throw new UsageError("a PD deployment takes both --prefill N and --decode M");
  }
  return {
    mode,
    instances: { prefill: count("prefill", v.prefill), decode: count("decode", v.decode) },
  };
}

/** The file name without its directory and a .gguf ending: the default model name. */
export function modelNameFromPath(path) {
  const base = path.split(/[\\/]/).filter(Boolean).at(-1) ?? "";
  return base.replace(/\.gguf$/i, "");
}

/**
 * @param {readonly string[]} argv the arguments after `flowserve`
 * @param {Record<string, string | undefined>} env the environment
 */
export function parseCommandLine(argv, env = {}) {
  const dashdash = argv.indexOf("--");
  const own = dashdash < 0 ? argv : argv.slice(0, dashdash);
  const passthrough = dashdash < 0 ? [] : argv.slice(dashdash + 1);
  let parsed;
  try {
    parsed = parseArgs({ args: [...own], options: OPTIONS, strict: true, allowPositionals: true });
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
  const { values: v, positionals: pos } = parsed;
  if (v.help || pos.length === 0) return { kind: "help" };
  const has = (n) => Object.hasOwn(COMMANDS, n);
  const name = has(pos[0]) ? pos[0] : `${pos[0]} ${pos[1] ?? ""}`.trim();
  const spec = has(name) ? COMMANDS[name] : undefined;
  if (!spec) throw new UsageError(`unknown command: ${pos.slice(0, 2).join(" ")}`);
  const args = pos.slice(name.split(" ").length);
  const required = spec.positionals.filter((p) => !p.endsWith("?"));
  if (args.length < required.length) {
    throw new UsageError(`${name} needs ${required.join(" ")}`);
  }
  if (args.length > spec.positionals.length) {
    throw new UsageError(`${name}: unexpected argument ${JSON.stringify(args.at(-1))}`);
  }
  for (const flag of Object.keys(v)) {
    if (!GLOBAL.includes(flag) && !spec.options.includes(flag)) {
      throw new UsageError(`${name} does not take --${flag}`);
    }
  }
  if (passthrough.length > 0 && name !== "logs") {
    throw new UsageError(`${name} takes no arguments after --`);
  }

  const url = (v.url ?? env.FLOWSERVE_URL ?? DEFAULT_URL).replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]+/.test(url)) throw new UsageError(`--url must be http(s)://…: ${url}`);
  const envKey = spec.key === "admin" ? "FLOWSERVE_ADMIN_KEY" : "FLOWSERVE_API_KEY";
  const key = spec.key === null ? null : (v.key ?? env[envKey] ?? null);
  if (spec.key !== null && !key) {
    throw new UsageError(`${name} needs a key: pass --key KEY or set ${envKey}`);
  }
  const base = { kind: "run", command: name, url, key, json: v.json === true };

  switch (name) {
    case "models upload": {
      const modelName = v.name ?? modelNameFromPath(args[0]);
      if (!modelName) throw new UsageError("cannot name the model from the path; pass --name");
      const partSize = v["part-size"] === undefined ? null : count("part-size", v["part-size"]);
      if (partSize !== null && partSize < 5) {
        throw new UsageError("--part-size is at least 5 (MiB): R2's smallest part");
      }
      return {
        ...base,
        path: args[0],
        name: modelName,
        partSize: partSize === null ? null : partSize * 2 ** 20,
      };
    }
    case "deployments create": {
      const scheduler = oneOf("scheduler", v.scheduler ?? "deepflow", SCHEDULERS);
      return { ...base, model: args[0], ...deploymentShape(v, v.mode), scheduler };
    }
    case "deployments rm":
      return { ...base, id: args[0] };
    case "deployments scale": {
      const pdFlags = v.prefill !== undefined || v.decode !== undefined;
      if (pdFlags === (args[1] !== undefined)) {
        throw new UsageError(
          "deployments scale takes ID N (colocated) or ID --prefill N --decode M (PD)",
        );
      }
      const counts = pdFlags
        ? deploymentShape(v, "pd").instances
        : { colocated: count("N", args[1]) };
      return { ...base, id: args[0], counts };
    }
    case "requests get":
      return { ...base, id: args[0] };
    case "metrics": {
      let grep = null;
      if (v.grep !== undefined) {
        try {
          grep = new RegExp(v.grep);
        } catch {
          throw new UsageError(`--grep is not a regular expression: ${v.grep}`);
        }
      }
      return { ...base, grep };
    }
    case "logs":
      if (passthrough.length > 0 && v.tail !== true) {
        throw new UsageError("arguments after -- go to wrangler tail: add --tail");
      }
      return {
        ...base,
        tail: v.tail === true,
        tailArgs: passthrough,
        filter: { requestId: v.request ?? null, model: v.model ?? null, events: v.event ?? [] },
      };
    default:
      return base;
  }
}
