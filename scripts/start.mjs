// `npm start`: serves the embedded default model with local `wrangler dev` on
// http://127.0.0.1:8787, with the local development keys passed on the command line:
//   sk-local-dev   (tenant "local")   for /v1 and the request API
//   sk-local-admin (admin)            for management routes (model uploads)
// Extra arguments go to wrangler (e.g. `npm start -- --port 9000`); a `--port`, `--ip` or
// `--inspector-port` of the user's replaces ours (scripts/start-args.mjs).
import { spawn } from "node:child_process";
import { startArgs } from "./start-args.mjs";

const env = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_SEND_ERROR_REPORTS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};
const args = startArgs(process.argv.slice(2));
const child = spawn("node_modules/.bin/wrangler", args, { stdio: "inherit", env });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
