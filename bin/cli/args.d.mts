/** Types for args.mjs (plain JS so that `node bin/flowserve.mjs` runs it on Node 20). */
export const DEFAULT_URL: string;
export const USAGE: string;
export class UsageError extends Error {}
export function modelNameFromPath(path: string): string;

interface Base {
  kind: "run";
  command: string;
  url: string;
  key: string | null;
  json: boolean;
}
export type Counts = { colocated: number } | { prefill: number; decode: number };
export type Command =
  | { kind: "help" }
  | (Base & { command: "models upload"; path: string; name: string; partSize: number | null })
  | (Base & { command: "models ls" | "deployments ls" })
  | (Base & {
      command: "deployments create";
      model: string;
      mode: "colocated" | "pd";
      instances: Counts;
      scheduler: string;
    })
  | (Base & { command: "deployments rm" | "requests get"; id: string })
  | (Base & { command: "deployments scale"; id: string; counts: Counts })
  | (Base & { command: "metrics"; grep: RegExp | null })
  | (Base & {
      command: "logs";
      tail: boolean;
      tailArgs: string[];
      filter: { requestId: string | null; model: string | null; events: string[] };
    });

export function parseCommandLine(
  argv: readonly string[],
  env?: Record<string, string | undefined>,
): Command;
