// The worker's HTTP API from the CLI: bearer-key requests, JSON answers, the server's error
// message as a CliError. Used by bin/flowserve.mjs and bin/cli/upload-io.mjs.
import { errorMessage } from "./format.mjs";

/** A failure to report: the server's message (or ours), exit 1. */
export class CliError extends Error {}

export const out = (text) => process.stdout.write(text.endsWith("\n") ? text : `${text}\n`);
export const err = (text) => process.stderr.write(text.endsWith("\n") ? text : `${text}\n`);

export async function call(cmd, method, path, init = {}) {
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

export async function callJson(cmd, method, path, body) {
  const init =
    body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { "content-type": "application/json" } };
  return parseJson(await call(cmd, method, path, init));
}

/** A 2xx body that should be JSON; anything else is an error with the server's text. */
export function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    throw new CliError(`the server answered with something other than JSON: ${text.slice(0, 200)}`);
  }
}
