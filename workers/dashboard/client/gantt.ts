/**
 * The dashboard's Gantt chart of one request: the request, its job and each task on its
 * instance, with queued, prefill and decode spans, the first token and the finish (rows from
 * shared/serving/timeline.ts), drawn as SVG with text nodes only.
 */
import { requestTimeline, type SpanKind } from "../../../shared/serving/timeline.ts";
import type { RequestRecord } from "../../../shared/types/records.ts";

export const SPAN_COLORS: Record<SpanKind, string> = {
  queued: "#cbd5e1",
  prefill: "#f59e0b",
  decode: "#2563eb",
  running: "#64748b",
};
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A request's Gantt chart (`requestTimeline`) as an SVG `width` pixels wide (at least 600). */
export function drawTimeline(r: RequestRecord, availableWidth: number): SVGElement {
  const tl = requestTimeline(r, Date.now());
  const labelW = 300;
  const width = Math.max(600, availableWidth || 900);
  const rowH = 24;
  const top = 24;
  const plotW = width - labelW - 16;
  const spanMs = Math.max(1, tl.endAt - tl.startAt);
  const x = (at: number) => labelW + ((at - tl.startAt) / spanMs) * plotW;
  const root = svg("svg", {
    width,
    height: top + rowH * tl.rows.length + 8,
    "data-request-id": r.id,
    role: "img",
    "aria-label": `timeline of ${r.id}`,
  });
  for (let i = 0; i <= 4; i++) {
    const at = tl.startAt + (spanMs * i) / 4;
    root.append(
      svg("line", {
        x1: x(at),
        x2: x(at),
        y1: top - 6,
        y2: top + rowH * tl.rows.length,
        class: "grid",
      }),
    );
    root.append(
      svg(
        "text",
        { x: x(at), y: 12, "text-anchor": "middle", class: "axis" },
        `${Math.round(at - tl.startAt)} ms`,
      ),
    );
  }
  tl.rows.forEach((row, i) => {
    const y = top + i * rowH;
    const g = svg("g", { class: `row ${row.kind}`, "data-kind": row.kind, "data-id": row.id });
    const indent = row.kind === "request" ? 0 : row.kind === "job" ? 12 : 24;
    g.append(
      svg("text", { x: 4 + indent, y: y + 16, class: "label" }, `${row.label} (${row.status})`),
    );
    for (const s of row.spans) {
      const w = Math.max(1, x(s.toAt) - x(s.fromAt));
      const rect = svg("rect", {
        x: x(s.fromAt),
        y: y + 4,
        width: w,
        height: rowH - 8,
        rx: 2,
        fill: SPAN_COLORS[s.kind],
      });
      rect.append(svg("title", {}, `${s.kind}: ${s.toAt - s.fromAt} ms`));
      g.append(rect);
    }
    for (const m of row.marks) {
      const mx = x(m.at);
      g.append(
        m.kind === "first-token"
          ? svg("path", { d: `M${mx} ${y + 2} l4 5 l-4 5 l-4 -5 z`, class: "first-token" })
          : svg("line", { x1: mx, x2: mx, y1: y + 2, y2: y + rowH - 2, class: "finish" }),
      );
    }
    root.append(g);
  });
  return root;
}
