/** The committed dashboard bundle is what `npm run build:dashboard` makes of the client today. */
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { BUNDLE_PATH, dashboardBundleModule } from "../../scripts/build-dashboard.ts";

describe("workers/dashboard/client-bundle.gen.ts", () => {
  it("is current (run npm run build:dashboard after changing the client)", async () => {
    expect(readFileSync(BUNDLE_PATH, "utf8") === (await dashboardBundleModule())).toBe(true);
  });
});
