import { describe, expect, it } from "vitest";
import {
  deploymentsTable,
  errorMessage,
  formatBytes,
  progressBar,
  table,
} from "../../bin/cli/format.mjs";

describe("CLI output", () => {
  it("aligns table columns to their widest cell", () => {
    expect(
      table(
        ["ID", "MODEL"],
        [
          ["dep_1", "s260k"],
          ["dep_long", "m"],
        ],
      ).split("\n"),
    ).toEqual(["ID        MODEL", "dep_1     s260k", "dep_long  m"]);
  });

  it("draws the progress bar from bytes sent and the total", () => {
    expect(progressBar("up", 0, 2048, 10)).toBe("up [----------]   0%  0 B / 2.0 KiB");
    expect(progressBar("up", 1024, 2048, 10)).toBe("up [#####-----]  50%  1.0 KiB / 2.0 KiB");
    expect(progressBar("up", 2048, 2048, 10)).toBe("up [##########] 100%  2.0 KiB / 2.0 KiB");
    expect(progressBar("up", 0, 0, 4)).toBe("up [####] 100%  0 B / 0 B");
    expect(formatBytes(3 * 2 ** 20 + 2 ** 19)).toBe("3.5 MiB");
  });

  it("prints the server's error message, or the status when the body is not the envelope", () => {
    const env = JSON.stringify({
      error: { message: "No deployment dep_x.", type: "invalid_request_error", param: "id" },
    });
    expect(errorMessage(404, env)).toBe("No deployment dep_x.");
    expect(errorMessage(502, "Bad gateway")).toBe("HTTP 502: Bad gateway");
    expect(errorMessage(500, "")).toBe("HTTP 500");
  });

  it("sums a deployment's instances by role and load", () => {
    const d = {
      id: "dep_1",
      model: "m",
      mode: "pd",
      scheduler: "deepflow",
      createdAt: 0,
      instances: [
        { id: "i1", role: "prefill", numRunning: 1, numWaiting: 0 },
        { id: "i2", role: "decode", numRunning: 2, numWaiting: 3 },
        { id: "i3", role: "decode", numRunning: 0, numWaiting: 1 },
      ],
    };
    const [, row] = deploymentsTable([d]).split("\n");
    expect(row?.split(/\s{2,}/)).toEqual([
      "dep_1",
      "m",
      "pd",
      "deepflow",
      "prefill:1 decode:2",
      "3",
      "4",
      "1970-01-01T00:00:00.000Z",
    ]);
  });
});
