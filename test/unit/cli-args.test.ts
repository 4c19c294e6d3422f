import { describe, expect, it } from "vitest";
import { DEFAULT_URL, parseCommandLine, UsageError } from "../../bin/cli/args.mjs";

const ENV = { FLOWSERVE_ADMIN_KEY: "sk-admin-env", FLOWSERVE_API_KEY: "sk-tenant-env" };

function usageError(argv: string[], env: Record<string, string> = ENV): string {
  try {
    parseCommandLine(argv, env);
  } catch (e) {
    expect(e).toBeInstanceOf(UsageError);
    return (e as Error).message;
  }
  throw new Error(`no usage error for ${argv.join(" ")}`);
}

describe("parseCommandLine", () => {
  it("answers help for no arguments, --help and -h", () => {
    for (const argv of [[], ["--help"], ["-h"], ["models", "ls", "--help"]]) {
      expect(parseCommandLine(argv, ENV)).toEqual({ kind: "help" });
    }
  });

  it("takes the URL and key from flags before the environment, and the admin key for admin routes", () => {
    const fromEnv = parseCommandLine(["models", "ls"], ENV);
    expect(fromEnv).toMatchObject({ command: "models ls", url: DEFAULT_URL, key: "sk-admin-env" });
    const env = { ...ENV, FLOWSERVE_URL: "https://fs.example.dev/" };
    expect(parseCommandLine(["models", "ls"], env)).toMatchObject({
      url: "https://fs.example.dev",
    });
    const flags = parseCommandLine(["models", "ls", "--url", "http://h:1", "--key=sk-flag"], env);
    expect(flags).toMatchObject({ url: "http://h:1", key: "sk-flag" });
  });

  it("uses the tenant key for requests get and no key for logs", () => {
    expect(parseCommandLine(["requests", "get", "req_1"], ENV)).toMatchObject({
      command: "requests get",
      id: "req_1",
      key: "sk-tenant-env",
    });
    expect(parseCommandLine(["logs"], {})).toMatchObject({ command: "logs", key: null });
  });

  it("refuses a command that needs a key when none is given, naming the variable", () => {
    expect(usageError(["models", "ls"], {})).toMatch(/FLOWSERVE_ADMIN_KEY/);
    expect(usageError(["requests", "get", "req_1"], { FLOWSERVE_ADMIN_KEY: "x" })).toMatch(
      /FLOWSERVE_API_KEY/,
    );
  });

  it("names an upload after the file unless --name is given", () => {
    expect(parseCommandLine(["models", "upload", "../m/stories260K-f32.gguf"], ENV)).toMatchObject({
      path: "../m/stories260K-f32.gguf",
      name: "stories260K-f32",
    });
    expect(
      parseCommandLine(["models", "upload", "a/b.gguf", "--name", "s260k"], ENV),
    ).toMatchObject({ name: "s260k" });
  });

  it("takes --part-size in MiB, at least R2's 5", () => {
    const up = (...extra: string[]) =>
      parseCommandLine(["models", "upload", "m.gguf", ...extra], ENV);
    expect(up()).toMatchObject({ partSize: null });
    expect(up("--part-size", "8")).toMatchObject({ partSize: 8 * 2 ** 20 });
    expect(() => up("--part-size", "4")).toThrow(/at least 5/);
    expect(() => up("--part-size", "1.5")).toThrow(/positive whole number/);
  });

  it("builds colocated and PD deployment bodies", () => {
    expect(parseCommandLine(["deployments", "create", "m"], ENV)).toMatchObject({
      model: "m",
      mode: "colocated",
      instances: { colocated: 1 },
      scheduler: "deepflow",
    });
    expect(
      parseCommandLine(
        ["deployments", "create", "m", "--instances", "3", "--scheduler", "round-robin"],
        ENV,
      ),
    ).toMatchObject({ mode: "colocated", instances: { colocated: 3 }, scheduler: "round-robin" });
    const pd = ["deployments", "create", "m", "--mode", "pd", "--prefill", "1", "--decode", "2"];
    expect(parseCommandLine(pd, ENV)).toMatchObject({
      mode: "pd",
      instances: { prefill: 1, decode: 2 },
    });
    // --prefill/--decode alone imply PD
    expect(
      parseCommandLine(["deployments", "create", "m", "--prefill", "2", "--decode", "1"], ENV),
    ).toMatchObject({ mode: "pd", instances: { prefill: 2, decode: 1 } });
  });

  it("rejects impossible deployment shapes", () => {
    const base = ["deployments", "create", "m"];
    expect(usageError([...base, "--mode", "pd", "--prefill", "1"])).toMatch(/--decode/);
    expect(usageError([...base, "--mode", "pd", "--instances", "2"])).toMatch(/--prefill/);
    expect(usageError([...base, "--mode", "colocated", "--decode", "1"])).toMatch(/--mode pd/);
    expect(usageError([...base, "--instances", "0"])).toMatch(/positive whole number/);
    expect(usageError([...base, "--instances", "two"])).toMatch(/positive whole number/);
    expect(usageError([...base, "--mode", "split"])).toMatch(/colocated, pd/);
    expect(usageError([...base, "--scheduler", "random"])).toMatch(/deepflow/);
  });

  it("parses scale as ID N for colocated and ID --prefill --decode for PD", () => {
    expect(parseCommandLine(["deployments", "scale", "dep_1", "4"], ENV)).toMatchObject({
      id: "dep_1",
      counts: { colocated: 4 },
    });
    expect(
      parseCommandLine(["deployments", "scale", "dep_1", "--prefill", "2", "--decode", "3"], ENV),
    ).toMatchObject({ counts: { prefill: 2, decode: 3 } });
    expect(usageError(["deployments", "scale", "dep_1"])).toMatch(/ID N/);
    expect(usageError(["deployments", "scale", "dep_1", "2", "--prefill", "1"])).toMatch(/ID N/);
  });

  it("parses the metrics pattern as a regular expression", () => {
    const c = parseCommandLine(["metrics", "--grep", "requests_total|tokens"], ENV);
    if (c.kind !== "run" || c.command !== "metrics") throw new Error("not metrics");
    expect(c.grep?.test("flowserve:prompt_tokens_total 3")).toBe(true);
    expect(c.grep?.test("flowserve:kv_cache_usage_perc 0")).toBe(false);
    expect(usageError(["metrics", "--grep", "("])).toMatch(/regular expression/);
  });

  it("collects repeated --event filters and passes arguments after -- to wrangler tail", () => {
    const argv = ["logs", "--tail", "--event", "task.finished", "--event", "scheduler.decided"];
    expect(parseCommandLine([...argv, "--request", "req_1", "--", "my-worker"], {})).toMatchObject({
      tail: true,
      tailArgs: ["my-worker"],
      filter: {
        requestId: "req_1",
        model: null,
        events: ["task.finished", "scheduler.decided"],
      },
    });
    expect(usageError(["logs", "--", "my-worker"], {})).toMatch(/--tail/);
  });

  it("rejects unknown commands, options another command owns, and missing or extra arguments", () => {
    expect(usageError(["models", "delete"])).toMatch(/unknown command: models delete/);
    expect(usageError(["constructor"])).toMatch(/unknown command: constructor/); // not Object.prototype
    expect(usageError(["models", "ls", "--grep", "x"])).toMatch(/does not take --grep/);
    expect(usageError(["models", "ls", "--bogus"])).toMatch(/bogus/);
    expect(usageError(["deployments", "rm"])).toMatch(/needs ID/);
    expect(usageError(["deployments", "rm", "a", "b"])).toMatch(/unexpected argument "b"/);
    expect(usageError(["models", "ls", "--url", "ftp://x"])).toMatch(/http/);
  });
});
