/** Admission rules: which deployments a request may use, and how a context cache is continued. */
import { describe, expect, it } from "vitest";
import {
  chooseDeployments,
  continueContextCache,
  modelOrNotFound,
} from "../../../shared/serving/admission.ts";
import type { DeploymentRecord, ModelRecord } from "../../../shared/types/deployments.ts";
import type { ContextCacheRecord } from "../../../shared/types/records.ts";

const ZERO = { colocated: 0, prefill: 0, decode: 0 };

const dep = (id: string, mode: "colocated" | "pd", model = "m"): DeploymentRecord => ({
  id,
  object: "deployment",
  model,
  generation: 2,
  mode,
  scheduler: "deepflow",
  status: "active",
  createdAt: 0,
  instances: { colocated: mode === "pd" ? [] : ["i"], prefill: [], decode: [] },
  scaling: { min: ZERO, max: ZERO, target: ZERO, scaledAt: 0 },
});

const model: ModelRecord = {
  name: "m",
  r2Key: "models/m.gguf",
  sizeBytes: 1,
  ownedBy: "admin",
  createdAt: 0,
  summary: {} as ModelRecord["summary"],
  generation: 2,
  pdProfile: null,
  deployments: [dep("c", "colocated"), dep("p", "pd")],
  revision: 1,
};

const cache = (over: Partial<ContextCacheRecord> = {}): ContextCacheRecord => ({
  id: "ctx_1",
  object: "context_cache",
  model: "m",
  generation: 2,
  deploymentId: "c",
  instanceId: "i",
  input: { kind: "completion", prompts: ["The fox."] },
  numTokens: 4,
  numCachedTokens: 0,
  createdAt: 0,
  expiresAt: 1,
  ...over,
});

describe("admission", () => {
  it("answers 404 for an unknown model", () => {
    expect(modelOrNotFound("x", null)).toMatchObject({
      ok: false,
      error: { kind: "not_found", code: "model_not_found", param: "model" },
    });
  });

  it("offers every deployment, or the pinned one with its rules", () => {
    expect(chooseDeployments(model, null, 3)).toEqual({ ok: true, value: model.deployments });
    expect(chooseDeployments(model, "p", 1)).toEqual({ ok: true, value: [model.deployments[1]] });
    expect(chooseDeployments(model, "p", 2)).toMatchObject({
      ok: false,
      error: { kind: "invalid_request", param: "deployment" },
    });
    expect(chooseDeployments(model, "zz", 1)).toMatchObject({
      ok: false,
      error: { kind: "not_found", code: "deployment_not_found" },
    });
    const other = chooseDeployments(model, "o", 1, dep("o", "colocated", "n"));
    expect(other).toMatchObject({ ok: false, error: { kind: "invalid_request" } });
    expect(!other.ok && other.error.message).toContain("serves model n");
  });

  it("continues a live cache and refuses one the model has moved past", () => {
    const input = { kind: "completion" as const, prompts: [" It ran.", " It slept."] };
    expect(continueContextCache("ctx_1", cache(), model, null, input)).toEqual({
      ok: true,
      value: { kind: "completion", prompts: ["The fox. It ran.", "The fox. It slept."] },
    });
    const reuploaded = continueContextCache("ctx_1", cache({ generation: 1 }), model, null, input);
    expect(!reuploaded.ok && reuploaded.error.message).toContain("re-uploaded");
    const deleted = continueContextCache(
      "ctx_1",
      cache({ deploymentId: "gone" }),
      model,
      null,
      input,
    );
    expect(!deleted.ok && deleted.error.message).toContain("deleted");
    expect(continueContextCache("ctx_1", cache(), model, "p", input)).toMatchObject({
      ok: false,
      error: { kind: "invalid_request", param: "deployment" },
    });
    expect(continueContextCache("ctx_1", null, model, null, input)).toMatchObject({
      ok: false,
      error: { kind: "not_found", code: "context_cache_not_found" },
    });
    const chat = { kind: "chat" as const, messages: [{ role: "user" as const, content: "hi" }] };
    expect(continueContextCache("ctx_1", cache(), model, null, chat)).toMatchObject({
      ok: false,
      error: { param: "context_cache" },
    });
  });
});
