// The `wrangler dev` argument list behind `npm start`: our defaults, then the user's arguments.
// A default option the user gives (`--port 9000` or `--port=9000`) is dropped, so wrangler never
// sees the same option twice. Pure, so that test/unit/start-args.test.ts can check it.

/** Options `npm start` sets unless the user sets them. */
const DEFAULT_OPTIONS = [
  ["--ip", "127.0.0.1"],
  ["--port", "8787"],
  ["--inspector-port", "0"],
];

/**
 * @param {readonly string[]} userArgs the arguments after `npm start --`
 * @returns {string[]} the arguments for `wrangler`, starting with `dev`
 */
export function startArgs(userArgs) {
  const given = (flag) => userArgs.some((a) => a === flag || a.startsWith(`${flag}=`));
  const defaults = DEFAULT_OPTIONS.filter(([flag]) => !given(flag)).flat();
  return [
    "dev",
    ...defaults,
    "--show-interactive-dev-session=false",
    "--var",
    "API_KEYS:local:sk-local-dev",
    "--var",
    "ADMIN_API_KEYS:sk-local-admin",
    ...userArgs,
  ];
}
