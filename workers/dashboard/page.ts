/**
 * GET /dashboard: one HTML page with inline CSS and the bundled script (client/, with uPlot). The
 * page itself needs no key; its script asks for an admin key once and sends it as the
 * Authorization header of its API calls, never in a URL.
 */
import { Hono } from "hono";
import type { AppEnv } from "../app-env.ts";
import { DASHBOARD_JS } from "./client-bundle.gen.ts";

const CSS = `
:root { font: 14px/1.4 system-ui, sans-serif; color: #0f172a; background: #f8fafc; }
body { margin: 0; }
header { display: flex; gap: 1rem; align-items: baseline; padding: .6rem 1.2rem; background: #0f172a; color: #f8fafc; }
header h1 { font-size: 1.1rem; margin: 0; }
header #status { flex: 1; color: #94a3b8; font-size: .85rem; }
main, #signin { padding: .6rem 1.2rem; }
section { background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: .4rem .9rem .8rem; margin-bottom: .8rem; }
h2 { font-size: 1rem; margin: .4rem 0; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; }
th, td { text-align: left; padding: .2rem .5rem; border-bottom: 1px solid #f1f5f9; }
th { color: #475569; font-weight: 600; }
.num { text-align: right; }
.mono { font-family: ui-monospace, monospace; font-size: .8rem; }
.small { font-size: .75rem; color: #475569; }
.bar { display: inline-block; width: 80px; height: 8px; background: #e2e8f0; border-radius: 4px; overflow: hidden; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #2563eb; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: .6rem; }
.error, #signin-error { color: #b91c1c; }
#timeline svg .label { font-size: 12px; fill: #0f172a; }
#timeline svg .axis { font-size: 10px; fill: #64748b; }
#timeline svg .grid { stroke: #e2e8f0; }
#timeline svg .first-token { fill: #dc2626; }
#timeline svg .finish { stroke: #0f172a; stroke-width: 2; }
.legend span { margin-right: 1rem; font-size: .8rem; }
.legend i { display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }
button { cursor: pointer; }
input { padding: .25rem .4rem; }
`;

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flowserve dashboard</title>
<style>${CSS}</style>
</head>
<body>
<header><h1>flowserve</h1><span id="status"></span><button id="signout" type="button" hidden>Sign out</button></header>
<form id="signin" hidden>
<p><label>Admin API key <input id="key" type="password" autocomplete="off" required></label>
<button type="submit">Sign in</button></p>
<p id="signin-error"></p>
</form>
<main id="main" hidden>
<section><h2>Deployments and instances</h2><div id="deployments"></div></section>
<section><h2>Requests</h2><div class="charts"><div id="chart-rate"></div><div id="chart-ttft"></div><div id="chart-tpot"></div></div></section>
<section><h2>Scheduler decisions</h2><div id="decisions"></div></section>
<section><h2>Request timeline</h2>
<form id="lookup"><input id="request-id" placeholder="req_…" size="40" autocomplete="off"> <button type="submit">Show</button></form>
<div id="timeline"></div></section>
</main>
<script>${DASHBOARD_JS}</script>
</body>
</html>
`;

/** The CSP allows only this page's own script (by hash) and calls to its own origin. */
let csp: Promise<string> | undefined;
async function contentSecurityPolicy(): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(DASHBOARD_JS));
  const hash = btoa(String.fromCharCode(...new Uint8Array(digest)));
  return [
    "default-src 'none'",
    `script-src 'sha256-${hash}'`,
    "style-src 'unsafe-inline'",
    "connect-src 'self'",
    "img-src data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
}

export const dashboard = new Hono<AppEnv>();

dashboard.get("/", async (c) => {
  csp ??= contentSecurityPolicy();
  return c.html(HTML, 200, {
    "content-security-policy": await csp,
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
  });
});
