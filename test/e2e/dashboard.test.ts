/**
 * GET /dashboard in a real browser: Debian's chromium driven by puppeteer-core (no browser
 * download). Signs in with the admin key, sees the default model's instance, sends a completion
 * and finds it in the timeline by its x-request-id, then saves a screenshot. Without
 * /usr/bin/chromium the test is skipped on a developer machine and fails under CI.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_KEY, type DevServer, LOCAL_KEY, startDevServer } from "../helpers/dev-server.ts";
import { REPO_ROOT } from "../helpers/models.ts";

const CHROMIUM = "/usr/bin/chromium";
const HAVE_CHROMIUM = existsSync(CHROMIUM);
if (!HAVE_CHROMIUM) {
  if (process.env.CI) throw new Error(`${CHROMIUM} not found: CI must run the dashboard test`);
  console.log(`dashboard test skipped: ${CHROMIUM} not found (apt-get install chromium)`);
}
/** Set UPDATE_SCREENSHOT=1 to refresh the README's docs/dashboard.png. */
const README_SCREENSHOT = join(REPO_ROOT, "docs/dashboard.png");

let server: DevServer;
let browser: Browser;
let profile: string;

beforeAll(async () => {
  if (!HAVE_CHROMIUM) return;
  server = await startDevServer();
  profile = mkdtempSync(join(tmpdir(), "flowserve-chromium-"));
  browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--user-data-dir=${profile}`,
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

function complete(): Promise<Response> {
  return fetch(`${server.url}/v1/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${LOCAL_KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "lemma-moe", prompt: "Once upon a time", max_tokens: 8 }),
  });
}

async function text(page: Page, selector: string): Promise<string> {
  return page.$eval(selector, (e) => e.textContent ?? "");
}

describe.skipIf(!HAVE_CHROMIUM)("GET /dashboard", () => {
  it("signs in, lists the instance, and draws a completion's timeline", async () => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1100, height: 860 });
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`${server.url}/dashboard`, { waitUntil: "load" });

    await page.waitForSelector("#signin:not([hidden])");
    await page.type("#key", ADMIN_KEY);
    await page.click("#signin button[type=submit]");
    // the default model's deployment has one colocated instance
    await page.waitForSelector("#deployments tr[data-instance-id]", { timeout: 30_000 });
    expect(await text(page, "#deployments")).toContain("lemma-moe");
    expect(await text(page, "#deployments")).toContain("colocated");
    // the key is kept for the tab only, and never put in the URL
    expect(page.url()).not.toContain(ADMIN_KEY);
    expect(await page.evaluate(() => sessionStorage.getItem("flowserve.adminKey"))).toBe(ADMIN_KEY);

    const res = await complete();
    expect(res.status).toBe(200);
    const requestId = res.headers.get("x-request-id") ?? "";
    expect(requestId).toMatch(/^req_/);

    // the scheduler's decision shows up, and the timeline finds the request by its id
    await page.waitForFunction(
      (id) => document.getElementById("decisions")?.textContent?.includes(id),
      { timeout: 30_000 },
      requestId,
    );
    await page.type("#request-id", requestId);
    await page.click("#lookup button[type=submit]");
    await page.waitForSelector(`#timeline svg[data-request-id="${requestId}"]`, {
      timeout: 30_000,
    });
    const kinds = await page.$$eval("#timeline svg g.row", (gs) =>
      gs.map((g) => g.getAttribute("data-kind")),
    );
    expect(kinds).toEqual(["request", "job", "task"]);
    expect(await text(page, "#timeline")).toContain("colocated on inst_");
    expect(await page.$$("#timeline svg .first-token")).not.toHaveLength(0);
    // the charts are drawn once two scrapes have come in
    await page.waitForSelector("#chart-ttft .uplot canvas", { timeout: 30_000 });

    const shots = mkdtempSync(join(tmpdir(), "flowserve-dashboard-"));
    await page.screenshot({
      path: join(shots, "dashboard.png") as `${string}.png`,
      fullPage: true,
    });
    expect(existsSync(join(shots, "dashboard.png"))).toBe(true);
    if (process.env.UPDATE_SCREENSHOT) {
      // a few more requests and scrapes, so that the charts have lines
      for (let i = 0; i < 4; i++) {
        await complete();
        await new Promise((r) => setTimeout(r, 2_000));
      }
      await page.screenshot({ path: README_SCREENSHOT as `${string}.png`, fullPage: true });
    }
    expect(errors).toEqual([]);
  });
});
