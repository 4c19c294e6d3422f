/** The serving metrics: what a JobExecutor counts from decisions and task reports, and the merge. */
import parsePrometheus from "parse-prometheus-text-format";
import { describe, expect, it } from "vitest";
import { emptyStats } from "../../../shared/fabric/regions.ts";
import type { ScheduleDecision } from "../../../shared/serving/scheduling.ts";
import {
  analyticsPoint,
  type EndedTask,
  renderServingMetrics,
  ServingMetrics,
} from "../../../shared/serving/serving-metrics.ts";

const request = {
  kind: "text_completion" as const,
  status: "succeeded" as const,
  receivedAt: 1_000,
  firstTokenAt: 1_250,
  finishedAt: 2_250,
};

function sample(text: string, line: string): number | undefined {
  const found = text.split("\n").find((l) => l.startsWith(`${line} `));
  return found === undefined ? undefined : Number(found.slice(line.length + 1));
}

describe("ServingMetrics", () => {
  it("counts a colocated request's tokens, its end and its latencies", () => {
    const m = new ServingMetrics();
    const t: EndedTask = {
      model: "m",
      instanceId: "inst_a",
      role: "colocated",
      numPromptTokens: 40,
      numCachedTokens: 32,
      numCompletionTokens: 11,
      request,
    };
    m.taskEnded(t, 5);
    const text = renderServingMetrics([m.snapshot()]);
    expect(
      sample(text, 'flowserve:requests_total{model="m",kind="text_completion",status="succeeded"}'),
    ).toBe(1);
    expect(sample(text, 'flowserve:prompt_tokens_total{model="m"}')).toBe(40);
    expect(sample(text, 'flowserve:generation_tokens_total{model="m"}')).toBe(11);
    expect(
      sample(text, 'flowserve:prefix_cache_queries_total{model="m",instance_id="inst_a"}'),
    ).toBe(40);
    expect(sample(text, 'flowserve:prefix_cache_hits_total{model="m",instance_id="inst_a"}')).toBe(
      32,
    );
    expect(sample(text, 'flowserve:time_to_first_token_seconds_sum{model="m"}')).toBe(0.25);
    expect(sample(text, 'flowserve:time_to_first_token_seconds_bucket{model="m",le="0.1"}')).toBe(
      0,
    );
    expect(sample(text, 'flowserve:time_to_first_token_seconds_bucket{model="m",le="0.25"}')).toBe(
      1,
    );
    expect(sample(text, 'flowserve:e2e_request_latency_seconds_sum{model="m"}')).toBe(1.25);
    // (2250 - 1250) ms over 10 tokens after the first
    expect(sample(text, 'flowserve:time_per_output_token_seconds_sum{model="m"}')).toBe(0.1);
    expect(sample(text, 'flowserve:time_per_output_token_seconds_count{model="m"}')).toBe(1);
  });

  it("counts a PD job's prompt once (prefill) and its generated tokens once (decode)", () => {
    const m = new ServingMetrics();
    const base = { model: "m", numPromptTokens: 20, numCachedTokens: 0 };
    m.taskEnded(
      { ...base, instanceId: "p", role: "prefill", numCompletionTokens: 1, request: null },
      1,
    );
    m.taskEnded({ ...base, instanceId: "d", role: "decode", numCompletionTokens: 9, request }, 2);
    const text = renderServingMetrics([m.snapshot()]);
    expect(sample(text, 'flowserve:prompt_tokens_total{model="m"}')).toBe(20);
    expect(sample(text, 'flowserve:generation_tokens_total{model="m"}')).toBe(9);
    expect(sample(text, 'flowserve:prefix_cache_queries_total{model="m",instance_id="d"}')).toBe(
      undefined,
    );
    expect(sample(text, 'flowserve:e2e_request_latency_seconds_count{model="m"}')).toBe(1);
  });

  it("observes no time per output token for a one-token request, nor a TTFT without a token", () => {
    const m = new ServingMetrics();
    const base = { model: "m", instanceId: "i", role: "colocated" as const };
    m.taskEnded({ ...base, numCompletionTokens: 1, request }, 1);
    m.taskEnded(
      {
        ...base,
        numCompletionTokens: 0,
        request: { ...request, firstTokenAt: null, status: "failed" },
      },
      2,
    );
    const text = renderServingMetrics([m.snapshot()]);
    expect(sample(text, 'flowserve:time_per_output_token_seconds_count{model="m"}')).toBe(
      undefined,
    );
    expect(sample(text, 'flowserve:time_to_first_token_seconds_count{model="m"}')).toBe(1);
    expect(sample(text, 'flowserve:e2e_request_latency_seconds_count{model="m"}')).toBe(2);
    expect(
      sample(text, 'flowserve:requests_total{model="m",kind="text_completion",status="failed"}'),
    ).toBe(1);
  });

  it("takes an instance's load and running totals from its latest report across shards", () => {
    const [a, b] = [new ServingMetrics(), new ServingMetrics()];
    const load = {
      numRunning: 3,
      numWaiting: 1,
      numFreeBlocks: 96,
      numBlocks: 128,
      numOutstandingTokens: 0,
    };
    const fabric = emptyStats();
    fabric.durable.numWrites = 2;
    fabric.durable.bytesWritten = 4096;
    a.reported("m", "i", load, { numPreemptions: 5, fabric }, 200);
    b.reported(
      "m",
      "i",
      { ...load, numRunning: 9 },
      { numPreemptions: 4, fabric: emptyStats() },
      100,
    );
    const text = renderServingMetrics([a.snapshot(), b.snapshot()]);
    const labels = '{model="m",instance_id="i"}';
    expect(sample(text, `flowserve:num_requests_running${labels}`)).toBe(3);
    expect(sample(text, `flowserve:num_requests_waiting${labels}`)).toBe(1);
    expect(sample(text, `flowserve:kv_cache_usage_perc${labels}`)).toBe(0.25);
    expect(sample(text, `flowserve:num_preemptions_total${labels}`)).toBe(5);
    expect(
      sample(text, 'flowserve:fabric_bytes_total{instance_id="i",kind="durable",op="write"}'),
    ).toBe(4096);
    expect(
      sample(text, 'flowserve:fabric_operations_total{instance_id="i",kind="durable",op="write"}'),
    ).toBe(2);
  });

  it("counts scheduler decisions by policy and reason, summed across shards", () => {
    const [a, b] = [new ServingMetrics(), new ServingMetrics()];
    const d = {
      policy: "deepflow",
      reason: "prefix",
      groupReason: "only-group",
    } as ScheduleDecision;
    a.decided("m", d, 1);
    b.decided("m", d, 2);
    b.decided("m", { ...d, reason: "least-loaded" }, 3);
    b.decided("m", null, 4);
    const text = renderServingMetrics([a.snapshot(), b.snapshot()]);
    const line = (policy: string, reason: string, group: string) =>
      `flowserve:scheduler_decisions_total{model="m",policy="${policy}",reason="${reason}",group_reason="${group}"}`;
    expect(sample(text, line("deepflow", "prefix", "only-group"))).toBe(2);
    expect(sample(text, line("deepflow", "least-loaded", "only-group"))).toBe(1);
    expect(sample(text, line("none", "context-cache", "none"))).toBe(1);
  });

  it("renders every metric with HELP and TYPE in a form a Prometheus parser reads", () => {
    const m = new ServingMetrics();
    m.taskEnded(
      {
        model: "m",
        instanceId: "i",
        role: "colocated",
        numPromptTokens: 3,
        numCompletionTokens: 2,
        request,
      },
      1,
    );
    const families = parsePrometheus(renderServingMetrics([m.snapshot()]));
    expect(families.every((f) => f.name.startsWith("flowserve:") && f.help.length > 0)).toBe(true);
    expect(families.find((f) => f.name === "flowserve:e2e_request_latency_seconds")?.type).toBe(
      "HISTOGRAM",
    );
    expect(families).toHaveLength(16);
  });

  it("states every instance of the active deployments: serving once it reported, else idle", () => {
    const m = new ServingMetrics();
    const stats = {
      numRunning: 1,
      numWaiting: 0,
      numFreeBlocks: 9,
      numBlocks: 10,
      numOutstandingTokens: 5,
    };
    m.reported("m", "inst_a_c_0", stats, undefined, 1);
    const one = { colocated: 0, prefill: 1, decode: 1 };
    const dep = {
      id: "dep_a",
      object: "deployment" as const,
      model: "m",
      generation: 0,
      mode: "pd" as const,
      scheduler: "deepflow" as const,
      status: "active" as const,
      createdAt: 0,
      instances: { colocated: [], prefill: ["inst_a_c_0"], decode: ["inst_a_d_0"] },
      scaling: { min: one, max: one, target: one, scaledAt: 0 },
    };
    const families = parsePrometheus(renderServingMetrics([m.snapshot()], [dep]));
    const states = families.find((f) => f.name === "flowserve:instance_state");
    expect(
      states?.metrics.map((x) => [x.labels?.instance_id, x.labels?.role, x.labels?.state, x.value]),
    ).toEqual([
      ["inst_a_c_0", "prefill", "serving", "1"],
      ["inst_a_d_0", "decode", "idle", "1"],
    ]);
  });
});

describe("analyticsPoint", () => {
  it("writes one point per ended interactive request, none for other reports", () => {
    const request = {
      kind: "chat.completion" as const,
      status: "succeeded" as const,
      receivedAt: 1_000,
      firstTokenAt: 1_250,
      finishedAt: 2_000,
    };
    const ended = {
      model: "m",
      instanceId: "i0",
      role: "colocated" as const,
      numPromptTokens: 12,
      numCachedTokens: 8,
      numCompletionTokens: 30,
      request,
    };
    expect(analyticsPoint(ended)).toEqual({
      indexes: ["m"],
      blobs: ["m", "chat.completion", "succeeded", "i0"],
      doubles: [0.25, 1, 12, 8, 30],
    });
    expect(
      analyticsPoint({ ...ended, request: { ...request, firstTokenAt: null } })?.doubles[0],
    ).toBe(-1);
    expect(analyticsPoint({ ...ended, request: null })).toBeNull();
  });
});
