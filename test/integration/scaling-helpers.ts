/** Helpers of the scaling tests: deployments through the API, waiting for them to serve. */
import { env } from "cloudflare:workers";
import { expect, vi } from "vitest";
import { CLUSTER_MANAGER_NAME, npuName } from "../../shared/protocol/names.ts";
import type { InstanceStatus } from "../../shared/types/instances.ts";
import type { RequestRecord } from "../../shared/types/records.ts";
import { admin, call, post, postDeployment } from "./worker-client.ts";

export const MODEL = "lemma-moe";
export const cluster = () => env.CLUSTER_MANAGER.getByName(CLUSTER_MANAGER_NAME);

export type InstanceView = InstanceStatus & { numRunning: number; numWaiting: number };
export interface DeploymentView {
  id: string;
  instances: InstanceView[];
  serving: Record<string, string[]>;
}

export async function deployment(id: string): Promise<DeploymentView> {
  const res = await admin(`/api/deployments/${id}`);
  expect(res.status).toBe(200);
  return (await res.json()) as DeploymentView;
}

export async function create(body: object): Promise<DeploymentView> {
  expect((await call("/v1/models")).status).toBe(200); // registers the default model
  const res = await postDeployment({ model: MODEL, mode: "colocated", ...body });
  expect(res.status).toBe(201);
  return (await res.json()) as DeploymentView;
}

/** Waits until the deployment's live instances are `n`, all serving. */
export async function serving(id: string, n: number): Promise<DeploymentView> {
  let d: DeploymentView | null = null;
  await vi.waitUntil(
    async () => {
      d = await deployment(id);
      return d.instances.length === n && d.instances.every((i) => i.state === "serving");
    },
    { timeout: 20_000, interval: 20 },
  );
  return d as unknown as DeploymentView;
}

export async function complete(deploymentId: string, prompt: string, maxTokens = 8) {
  const res = await post("/v1/completions", {
    model: MODEL,
    deployment: deploymentId,
    prompt,
    max_tokens: maxTokens,
    temperature: 0,
    ignore_eos: true,
  });
  const body = (await res.json()) as { choices?: { text: string }[]; error?: { code: string } };
  return { status: res.status, id: res.headers.get("x-request-id") as string, body };
}

export async function ended(id: string): Promise<RequestRecord> {
  let rec: RequestRecord | null = null;
  await vi.waitUntil(
    async () => {
      rec = (await (await call(`/api/requests/${id}`)).json()) as RequestRecord;
      return !["queued", "running"].includes(rec.status);
    },
    { timeout: 10_000, interval: 20 },
  );
  return rec as unknown as RequestRecord;
}

/**
 * When the last task that a deployment's instances keep latencies for ended: an autoscaler tick
 * driven at the earliest of these for several deployments has every one's tasks in its SLO window
 * (on a loaded machine one deployment's traffic can end many seconds after another's).
 */
export async function lastTaskEndedAt(id: string): Promise<number> {
  const stats = await Promise.all(
    (await deployment(id)).instances.map((i) => env.NPU.getByName(npuName(i.id)).stats()),
  );
  return Math.max(...stats.flatMap((s) => s.recentTasks.map((t) => t.endedAt)));
}
