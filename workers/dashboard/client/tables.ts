/**
 * The dashboard's tables, built from the JSON APIs' answers: deployments with one row per
 * instance (its load and KV blocks used) and the latest scheduler decisions.
 */
import type { DecisionSummary } from "../../../shared/serving/decision-log.ts";
import type { DeploymentRecord } from "../../../shared/types/deployments.ts";
import { el } from "./dom.ts";

interface InstanceLoad {
  id: string;
  role: string;
  numRunning: number;
  numWaiting: number;
  numFreeBlocks: number;
  numBlocks: number;
  loaded: boolean;
}
export type DeploymentWithLoad = Omit<DeploymentRecord, "instances"> & {
  instances: InstanceLoad[];
};

function kvBar(used: number, total: number): HTMLElement {
  const frac = total > 0 ? used / total : 0;
  const bar = el(
    "span",
    { class: "bar" },
    el("span", { style: `width:${(frac * 100).toFixed(1)}%` }),
  );
  return el("span", {}, bar, ` ${used}/${total} (${(frac * 100).toFixed(0)}%)`);
}

/** GET /api/deployments as one row per instance (or a line saying there are none). */
export function deploymentsTable(data: DeploymentWithLoad[]): HTMLElement {
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
  return rows.length === 0
    ? el("p", {}, "No deployments.")
    : el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ...[...head, "KV blocks used"].map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows),
      );
}

/** The latest decisions; clicking a request id calls `onPick` with it. */
export function decisionsTable(
  data: DecisionSummary[],
  onPick: (requestId: string) => void,
): HTMLElement {
  const rows = data.map((d) => {
    const link = el("a", { href: "#", class: "mono" }, d.requestId);
    link.addEventListener("click", (ev) => {
      ev.preventDefault();
      onPick(d.requestId);
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
  return rows.length === 0
    ? el("p", {}, "No decisions yet.")
    : el(
        "table",
        {},
        el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows),
      );
}
