/** Types for start-args.mjs (plain JS so that `node scripts/start.mjs` runs it on Node 20). */
export function startArgs(userArgs: readonly string[]): string[];
