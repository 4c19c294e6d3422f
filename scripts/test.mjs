// `npm test`: both vitest projects (Node unit tests and workerd integration tests), then one plain
// "N passed, N failed" line for CI. Reference-model tests need ../shared/models: without it they
// are skipped (one notice line) on a developer machine, and the run fails under CI.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync } from "node:fs";

const HAVE_MODELS = existsSync("../shared/models/reference/greedy.json");
if (!HAVE_MODELS) {
  if (process.env.CI) {
    console.error("../shared/models not found: CI must run the reference-model tests");
    process.exit(1);
  }
  console.log("reference-model tests skipped: ../shared/models not found");
}
mkdirSync(".tmp", { recursive: true });
const args = [
  "vitest",
  "run",
  "--reporter=default",
  "--reporter=json",
  "--outputFile.json=.tmp/vitest.json",
  ...process.argv.slice(2),
];
const r = spawnSync("npx", args, { stdio: "inherit", env: { ...process.env, NO_COLOR: "1" } });
try {
  const j = JSON.parse(readFileSync(".tmp/vitest.json", "utf8"));
  const skipped = j.numPendingTests + j.numTodoTests;
  // a test file that fails before any test runs (a missing import) counts as one failure
  const broken = j.testResults.filter(
    (r) => r.status === "failed" && r.assertionResults.length === 0,
  );
  const failed = j.numFailedTests + broken.length;
  console.log(`${j.numPassedTests} passed, ${failed} failed, ${skipped} skipped`);
} catch {
  console.log("0 passed, 1 failed");
}
process.exit(r.status ?? 1);
