/**
 * The dashboard's browser script (bundled with uPlot by `npm run build:dashboard`). Asks for an
 * admin key once, keeps it in sessionStorage (never in a URL), sends it as the Authorization header
 * and polls the JSON APIs and /metrics every 2 s.
 */
import uPlot from "uplot";
import uPlotCss from "uplot/dist/uPlot.min.css";
import type { DecisionSummary } from "../../../shared/serving/decision-log.ts";
import {
  chartSeries,
  parsePrometheusText,
  type Scrape,
  type SeriesSpec,
  trimHistory,
} from "../../../shared/serving/metric-series.ts";
import type { DeploymentRecord } from "../../../shared/types/deployments.ts";
import type { RequestRecord } from "../../../shared/types/records.ts";
import { isTerminal } from "../../../shared/types/records.ts";
import { drawTimeline, SPAN_COLORS } from "./gantt.ts";

const KEY_STORAGE = "flowserve.adminKey";
const POLL_MS = 2000;
/** Quantiles are over the observations of the last minute; charts show five minutes. */
const WINDOW_MS = 60_000;
const KEEP_MS = 10 * 60_000;
const CHART_SPAN_S = 5 * 60;

interface InstanceLoad {
  id: string;
  role: string;
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numBlocks: number;
  loaded: boolean;
}
type DeploymentWithLoad = Omit<DeploymentRecord, "instances"> & { instances: InstanceLoad[] };

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function el(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

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

function kvBar(used: number, total: number): HTMLElement {
  const frac = total > 0 ? used / total : 0;
  const bar = el(
    "span",
    { class: "bar" },
    el("span", { style: `width:${(frac * 100).toFixed(1)}%` }),
  );
  return el("span", {}, bar, ` ${used}/${total} (${(frac * 100).toFixed(0)}%)`);
}

async function refreshDeployments(): Promise<void> {
  const { data } = await getJson<{ data: DeploymentWithLoad[] }>("/api/deployments");
  const rows = data.flatMap((d) =>
    d.instances.map((i) =>
      el(
        "tr",
        { "data-instance-id": i.id },
        el("td", {}, d.id),
        el("td", {}, d.model),
        el("td", {}, `${d.mode} · ${d.scheduler}`),
        el("td", { class: "mono" }, i.id),
        el("td", {}, i.role),
        el("td", {}, i.loaded ? "loaded" : "idle"),
        el("td", { class: "num" }, String(i.numRunning)),
        el("td", { class: "num" }, String(i.numWaiting)),
        el("td", {}, kvBar(i.numBlocks - i.numFreeBlocks, i.numBlocks)),
      ),
    ),
  );
  const head = ["deployment", "model", "mode", "instance", "role", "state", "running", "waiting"];
  $("deployments").replaceChildren(
    rows.length === 0
      ? el("p", {}, "No deployments.")
      : el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...[...head, "KV blocks used"].map((h) => el("th", {}, h)))),
          el("tbody", {}, ...rows),
        ),
  );
}

// --- request rate and latency percentiles

const QUANTILES = [0.5, 0.9, 0.99];
const COLORS = ["#2563eb", "#d97706", "#dc2626", "#059669"];
const CHARTS: { id: string; title: string; unit: string; specs: SeriesSpec[] }[] = [
  {
    id: "chart-rate",
    title: "requests/s",
    unit: "",
    specs: [{ key: "requests/s", kind: "rate", metric: "flowserve:requests_total" }],
  },
  ...[
    ["chart-ttft", "time to first token", "flowserve:time_to_first_token_seconds"],
    ["chart-tpot", "time per output token", "flowserve:time_per_output_token_seconds"],
  ].map(([id, title, metric]) => ({
    id: id as string,
    title: `${title} (s, last minute)`,
    unit: "s",
    specs: QUANTILES.map(
      (q): SeriesSpec => ({ key: `p${q * 100}`, kind: "quantile", metric: metric as string, q }),
    ),
  })),
];
const plots = new Map<string, uPlot>();

async function refreshMetrics(): Promise<void> {
  const res = await call("/metrics");
  if (!res.ok) throw new Error(await errorMessage(res));
  history.push({ at: Date.now(), samples: parsePrometheusText(await res.text()) });
  history = trimHistory(history, KEEP_MS);
  for (const c of CHARTS) {
    const s = chartSeries(history, c.specs, WINDOW_MS);
    const data: uPlot.AlignedData = [s.t, ...c.specs.map((x) => s.values[x.key] ?? [])];
    const plot = plots.get(c.id);
    if (plot) {
      plot.setData(data);
      continue;
    }
    const host = $(c.id);
    const opts: uPlot.Options = {
      title: c.title,
      width: Math.max(280, host.clientWidth),
      height: 180,
      // the last few minutes, also while there are only one or two points
      scales: { x: { time: true, range: (_u, _min, max) => [max - CHART_SPAN_S, max] } },
      series: [
        {},
        ...c.specs.map((x, i) => ({
          label: x.key,
          stroke: COLORS[i % COLORS.length] as string,
          width: 1.5,
          spanGaps: false,
        })),
      ],
      axes: [{}, { size: 56 }],
    };
    plots.set(c.id, new uPlot(opts, data, host));
  }
}

// --- scheduler decisions

async function refreshDecisions(): Promise<void> {
  const { data } = await getJson<{ data: DecisionSummary[] }>("/api/scheduler/decisions?limit=20");
  const rows = data.map((d) => {
    const link = el("a", { href: "#", class: "mono" }, d.requestId);
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      $<HTMLInputElement>("request-id").value = d.requestId;
      void showRequest(d.requestId);
    });
    const scores = d.scores.map(
      (s) => `${s.instanceId.slice(0, 12)}… load ${s.load}, prefix ${s.numMatchedBlocks}`,
    );
    return el(
      "tr",
      {},
      el("td", {}, new Date(d.at).toLocaleTimeString()),
      el("td", {}, link),
      el("td", {}, d.model),
      el(
        "td",
        { class: "mono" },
        d.decodeInstanceId ? `${d.instanceId} → ${d.decodeInstanceId}` : d.instanceId,
      ),
      el("td", {}, [d.reason, d.groupReason].filter(Boolean).join(" / ")),
      el("td", {}, d.balanced === null ? "" : d.balanced ? "yes" : "no"),
      el("td", { class: "small" }, scores.join("; ")),
    );
  });
  const head = ["time", "request", "model", "instance", "reason", "balanced", "scores"];
  $("decisions").replaceChildren(
    rows.length === 0
      ? el("p", {}, "No decisions yet.")
      : el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
          el("tbody", {}, ...rows),
        ),
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
