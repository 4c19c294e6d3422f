/**
 * The dashboard's browser script (bundled with uPlot by `npm run build:dashboard`). Asks for an
 * admin key once, keeps it in sessionStorage (never in a URL), sends it as the Authorization header
 * and polls the JSON APIs and /metrics every 2 s; the tables are built in tables.ts, the charts
 * drawn in charts.ts, a request's timeline in gantt.ts.
 */
import uPlotCss from "uplot/dist/uPlot.min.css";
import type { DecisionSummary } from "../../../shared/serving/decision-log.ts";
import {
  parsePrometheusText,
  type Scrape,
  trimHistory,
} from "../../../shared/serving/metric-series.ts";
import type { RequestRecord } from "../../../shared/types/records.ts";
import { isTerminal } from "../../../shared/types/records.ts";
import { drawCharts } from "./charts.ts";
import { $, el } from "./dom.ts";
import { drawTimeline, SPAN_COLORS } from "./gantt.ts";
import { type DeploymentWithLoad, decisionsTable, deploymentsTable } from "./tables.ts";

const KEY_STORAGE = "flowserve.adminKey";
const POLL_MS = 2000;
/** The /metrics scrapes kept for the charts. */
const KEEP_MS = 10 * 60_000;

let key: string | null = sessionStorage.getItem(KEY_STORAGE);
let history: Scrape[] = [];
let timer: ReturnType<typeof setTimeout> | undefined;
/** Bumped by every sign-in and sign-out: a poll of an older session does not re-arm itself. */
let session = 0;
let shownRequest: string | null = null;

class Unauthorized extends Error {}

async function call(path: string): Promise<Response> {
  const res = await fetch(path, { headers: { authorization: `Bearer ${key}` }, cache: "no-store" });
  if (res.status === 401 || res.status === 403) throw new Unauthorized(await errorMessage(res));
  return res;
}

async function errorMessage(res: Response): Promise<string> {
  const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
  return body?.error?.message ?? `HTTP ${res.status}`;
}

async function getJson<T>(path: string): Promise<T> {
  const res = await call(path);
  if (!res.ok) throw new Error(await errorMessage(res));
  return (await res.json()) as T;
}

// --- sign in and out

function showSignedIn(signedIn: boolean, message = ""): void {
  $("signin").hidden = signedIn;
  $("main").hidden = !signedIn;
  $("signout").hidden = !signedIn;
  $("signin-error").textContent = message;
}

function signOut(message = ""): void {
  session++;
  key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  clearTimeout(timer);
  history = [];
  showSignedIn(false, message);
}

$("signin").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("key");
  key = input.value.trim();
  input.value = "";
  try {
    await getJson("/api/deployments");
  } catch (e) {
    signOut(e instanceof Error ? e.message : String(e));
    return;
  }
  sessionStorage.setItem(KEY_STORAGE, key);
  start();
});
$("signout").addEventListener("click", () => signOut());

function start(): void {
  session++;
  clearTimeout(timer);
  showSignedIn(true);
  void poll(session);
}

async function poll(mine: number): Promise<void> {
  try {
    await Promise.all([
      refreshDeployments(),
      refreshMetrics(),
      refreshDecisions(),
      shownRequest ? refreshTimeline(shownRequest, false) : null,
    ]);
    if (mine !== session) return; // signed out (or in again) meanwhile
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (mine !== session) return;
    if (e instanceof Unauthorized) return signOut(e.message);
    $("status").textContent = `error: ${e instanceof Error ? e.message : String(e)}`;
  }
  timer = setTimeout(() => void poll(mine), POLL_MS);
}

// --- deployments and instances
async function refreshDeployments(): Promise<void> {
  const { data } = await getJson<{ data: DeploymentWithLoad[] }>("/api/deployments");
  $("deployments").replaceChildren(deploymentsTable(data));
}

// --- request rate and latency percentiles

async function refreshMetrics(): Promise<void> {
  const res = await call("/metrics");
  if (!res.ok) throw new Error(await errorMessage(res));
  history.push({ at: Date.now(), samples: parsePrometheusText(await res.text()) });
  history = trimHistory(history, KEEP_MS);
  drawCharts(history);
}

// --- scheduler decisions

async function refreshDecisions(): Promise<void> {
  const { data } = await getJson<{ data: DecisionSummary[] }>("/api/scheduler/decisions?limit=20");
  $("decisions").replaceChildren(
    decisionsTable(data, (requestId) => {
      $<HTMLInputElement>("request-id").value = requestId;
      void showRequest(requestId);
    }),
  );
}

// --- one request's timeline (Gantt)

async function refreshTimeline(id: string, announce: boolean): Promise<void> {
  const res = await call(`/api/admin/requests/${encodeURIComponent(id)}`);
  if (!res.ok) {
    if (announce)
      $("timeline").replaceChildren(el("p", { class: "error" }, await errorMessage(res)));
    shownRequest = null;
    return;
  }
  const r = (await res.json()) as RequestRecord;
  const legend = el(
    "p",
    { class: "legend" },
    ...Object.entries(SPAN_COLORS).map(([k, c]) =>
      el("span", {}, el("i", { style: `background:${c}` }), k),
    ),
    el("span", {}, "◆ first token  | finish"),
  );
  $("timeline").replaceChildren(drawTimeline(r, $("timeline").clientWidth), legend);
  // keep following a request until it ends
  shownRequest = isTerminal(r.status) ? null : id;
}

async function showRequest(id: string): Promise<void> {
  try {
    await refreshTimeline(id, true);
  } catch (e) {
    if (e instanceof Unauthorized) signOut(e.message);
  }
}

$("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = $<HTMLInputElement>("request-id").value.trim();
  if (id) void showRequest(id);
});

// uPlot's stylesheet travels inside this bundle
document.head.append(el("style", {}, uPlotCss));
if (key) start();
else showSignedIn(false);
