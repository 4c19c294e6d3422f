import { describe, expect, it } from "vitest";
import { startArgs } from "../../scripts/start-args.mjs";

/** The values wrangler's parser would see for `flag`, in both `--flag v` and `--flag=v` forms. */
function valuesOf(args: readonly string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(args[i + 1] ?? "");
    else if (a.startsWith(`${flag}=`)) out.push(a.slice(flag.length + 1));
  });
  return out;
}

describe("startArgs", () => {
  it("serves on 127.0.0.1:8787 when the user names no address", () => {
    const args = startArgs([]);
    expect(args[0]).toBe("dev");
    expect(valuesOf(args, "--port")).toEqual(["8787"]);
    expect(valuesOf(args, "--ip")).toEqual(["127.0.0.1"]);
  });

  it("lets the user's --port N replace the default", () => {
    const args = startArgs(["--port", "9000"]);
    expect(valuesOf(args, "--port")).toEqual(["9000"]);
    expect(valuesOf(args, "--ip")).toEqual(["127.0.0.1"]);
  });

  it("lets the user's --port=N replace the default", () => {
    expect(valuesOf(startArgs(["--port=9001"]), "--port")).toEqual(["9001"]);
  });

  it("lets the user's --ip replace the default in both forms", () => {
    expect(valuesOf(startArgs(["--ip", "0.0.0.0"]), "--ip")).toEqual(["0.0.0.0"]);
    const args = startArgs(["--ip=::1", "--port", "9002"]);
    expect(valuesOf(args, "--ip")).toEqual(["::1"]);
    expect(valuesOf(args, "--port")).toEqual(["9002"]);
  });

  it("does not take --inspector-port for --port", () => {
    const args = startArgs(["--inspector-port", "9229"]);
    expect(valuesOf(args, "--port")).toEqual(["8787"]);
    expect(valuesOf(args, "--inspector-port")).toEqual(["9229"]);
  });

  it("passes other arguments through in order, after the local keys", () => {
    const args = startArgs(["--var", "LOG_LEVEL:debug", "--persist-to", "state"]);
    expect(args.slice(-4)).toEqual(["--var", "LOG_LEVEL:debug", "--persist-to", "state"]);
    expect(valuesOf(args, "--var")).toEqual([
      "API_KEYS:local:sk-local-dev",
      "ADMIN_API_KEYS:sk-local-admin",
      "LOG_LEVEL:debug",
    ]);
  });
});
