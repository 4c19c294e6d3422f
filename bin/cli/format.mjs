// What `flowserve` prints: aligned tables, the upload progress bar, the rows of the ls
// commands and the server's error message. Pure, tested in test/unit/cli-format.test.ts.

/** Rows of strings under a header, each column as wide as its widest cell, two spaces apart. */
export function table(header, rows) {
  const all = [header, ...rows].map((r) => r.map((c) => String(c ?? "")));
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

/** Bytes in B, KiB, MiB or GiB with one decimal. */
export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(1)} ${units[u]}`;
}

/** `label [#####-----]  50%  1.0 MiB / 2.0 MiB` */
export function progressBar(label, done, total, width = 30) {
  const frac = total > 0 ? Math.min(1, done / total) : 1;
  const filled = Math.round(frac * width);
  const pct = `${Math.floor(frac * 100)}%`.padStart(4);
  return `${label} [${"#".repeat(filled)}${"-".repeat(width - filled)}] ${pct}  ${formatBytes(done)} / ${formatBytes(total)}`;
}

/** The message of the server's OpenAI error envelope, else the status and the body's start. */
export function errorMessage(status, bodyText) {
  try {
    const m = JSON.parse(bodyText)?.error?.message;
    if (typeof m === "string" && m) return m;
  } catch {
    // not JSON
  }
  const text = bodyText.trim().slice(0, 200);
  return `HTTP ${status}${text ? `: ${text}` : ""}`;
}

const iso = (ms) => (typeof ms === "number" ? new Date(ms).toISOString() : "-");

/** GET /api/models -> a table. */
export function modelsTable(list) {
  return table(
    ["NAME", "SIZE", "ARCH", "PARAMS", "CONTEXT", "DEPLOYMENTS", "CREATED"],
    list.map((m) => [
      m.name,
      formatBytes(m.sizeBytes ?? 0),
      m.summary?.architecture ?? "-",
      String(m.summary?.numParameters ?? "-"),
      String(m.summary?.contextLength ?? "-"),
      (m.deployments ?? []).map((d) => d.id).join(",") || "-",
      iso(m.createdAt),
    ]),
  );
}

/** Instance counts by role: `colocated:2` or `prefill:1 decode:1`. */
export function instanceCounts(instances) {
  const counts = new Map();
  for (const i of instances ?? []) counts.set(i.role, (counts.get(i.role) ?? 0) + 1);
  return [...counts].map(([role, n]) => `${role}:${n}`).join(" ") || "-";
}

/** GET /api/deployments -> a table (instances with their live load summed). */
export function deploymentsTable(list) {
  const sum = (d, k) => (d.instances ?? []).reduce((a, i) => a + (i[k] ?? 0), 0);
  return table(
    ["ID", "MODEL", "MODE", "SCHEDULER", "INSTANCES", "RUNNING", "WAITING", "CREATED"],
    list.map((d) => [
      d.id,
      d.model,
      d.mode,
      d.scheduler,
      instanceCounts(d.instances),
      String(sum(d, "numRunning")),
      String(sum(d, "numWaiting")),
      iso(d.createdAt),
    ]),
  );
}

const ms = (from, to) => (typeof from === "number" && typeof to === "number" ? to - from : "-");

/** GET /api/requests/:id -> a summary and a table of its tasks. */
export function requestText(r) {
  const head = [
    `id        ${r.id}`,
    `model     ${r.model}`,
    `kind      ${r.kind}`,
    `status    ${r.status}${r.error ? ` (${r.error})` : ""}`,
    `received  ${iso(r.receivedAt)}`,
    `ttft_ms   ${ms(r.receivedAt, r.firstTokenAt)}`,
    `total_ms  ${ms(r.receivedAt, r.finishedAt)}`,
  ];
  const tasks = (r.jobs ?? []).flatMap((j) =>
    (j.tasks ?? []).map((t) => [
      j.id,
      t.id,
      t.role,
      t.status,
      t.instanceId,
      String(t.numPromptTokens ?? "-"),
      String(t.numCompletionTokens ?? "-"),
      String(ms(t.startedAt, t.firstTokenAt)),
      String(ms(t.startedAt, t.finishedAt)),
      t.error ?? "",
    ]),
  );
  const header = ["JOB", "TASK", "ROLE", "STATUS", "INSTANCE", "PROMPT", "COMPLETION"];
  return `${head.join("\n")}\n\n${table([...header, "TTFT_MS", "RUN_MS", "ERROR"], tasks)}`;
}
