/**
 * What a request may run on, as pure rules over the model's record (the JobExecutor applies them
 * before planning): the deployments it may use (all active ones of its model, or the one it pins)
 * and the continuation of a context cache. Errors are values with the API's status and param.
 */
import { type ErrorInfo, errorInfo, failure, type Result } from "../errors.ts";
import type { GenerateInput } from "../protocol/messages.ts";
import type { DeploymentRecord, ModelRecord } from "../types/deployments.ts";
import type { ContextCacheRecord } from "../types/records.ts";

/** The model's record, or 404 `model_not_found`. */
export function modelOrNotFound(name: string, m: ModelRecord | null): Result<ModelRecord> {
  if (m) return { ok: true, value: m };
  return failure(
    errorInfo("not_found", `The model \`${name}\` does not exist.`, "model", "model_not_found"),
  );
}

/** 503 `no_deployment`: nothing can serve the job now (the message names the model). */
export function noDeployment(
  m: ModelRecord,
  hasDeployments: boolean,
  what = "this request",
): ErrorInfo {
  const msg = hasDeployments
    ? `No deployment of model ${m.name} can serve ${what} (PD deployments serve one prompt with ` +
      "n = 1; context caches and batch jobs need a colocated deployment)."
    : `Model ${m.name} has no active deployment; create one with POST /api/deployments.`;
  return errorInfo("overloaded", msg, null, "no_deployment");
}

/** Sequences a request generates: prompts times choices per prompt. */
export function numSeqsOf(input: GenerateInput, n: number): number {
  return (input.kind === "completion" ? input.prompts.length : 1) * n;
}

/**
 * The deployments a request may run on: the one it pins (404 unknown; 400 when `pinned` shows it
 * serves another model, or it is a PD group and the request has several sequences), else every
 * active deployment of its model. `pinned` is the pin's own record when it is not the model's.
 */
export function chooseDeployments(
  model: ModelRecord,
  pin: string | null,
  numSeqs: number,
  pinned: DeploymentRecord | null = null,
): Result<DeploymentRecord[]> {
  if (pin === null) return { ok: true, value: model.deployments };
  const d = model.deployments.find((x) => x.id === pin);
  if (!d) {
    if (pinned?.status === "active" && pinned.model !== model.name) {
      const msg = `Deployment ${pin} serves model ${pinned.model}, not ${model.name}.`;
      return failure(errorInfo("invalid_request", msg, "deployment"));
    }
    const msg = `No active deployment ${pin} of model ${model.name}.`;
    return failure(errorInfo("not_found", msg, "deployment", "deployment_not_found"));
  }
  if (d.mode === "pd" && numSeqs > 1) {
    const msg = "A PD deployment serves one prompt with n = 1.";
    return failure(errorInfo("invalid_request", msg, "deployment"));
  }
  return { ok: true, value: [d] };
}

/**
 * A request's input continuing a context cache: the cache's messages before the request's, its
 * prompt before each prompt. A cache follows its model: one made with weights the model no
 * longer serves (re-uploaded) or on a deployment since deleted is gone (404); a `deployment` pin
 * must name the cache's deployment (400); another model's cache or another kind is a 400.
 */
export function continueContextCache(
  id: string,
  rec: ContextCacheRecord | null,
  model: ModelRecord,
  pin: string | null,
  input: GenerateInput,
): Result<GenerateInput> {
  const gone = (why: string) =>
    failure(
      errorInfo(
        "not_found",
        `No context cache ${id} (${why}).`,
        "context_cache",
        "context_cache_not_found",
      ),
    );
  const bad = (msg: string, param = "context_cache") =>
    failure(errorInfo("invalid_request", msg, param));
  if (!rec) return gone("unknown or expired");
  if (rec.model !== model.name) return bad(`Context cache ${id} is for model ${rec.model}.`);
  if (rec.generation !== model.generation) {
    return gone(`model ${model.name} was re-uploaded after it was made; create it again`);
  }
  const dep = model.deployments.find((d) => d.id === rec.deploymentId);
  if (!dep) {
    return gone(`its deployment ${rec.deploymentId} was deleted; create it again`);
  }
  const roles = [dep.instances.colocated, dep.instances.prefill, dep.instances.decode];
  if (!roles.some((ids) => ids.includes(rec.instanceId))) {
    // its KV was pinned in the memory of an instance that scaled in
    return gone(`its instance ${rec.instanceId} scaled in; create it again`);
  }
  if (pin !== null && pin !== rec.deploymentId) {
    const msg = `Context cache ${id} lives on deployment ${rec.deploymentId}; pin that deployment or none.`;
    return bad(msg, "deployment");
  }
  const cached = rec.input;
  if (cached.kind === "chat" && input.kind === "chat") {
    return { ok: true, value: { kind: "chat", messages: [...cached.messages, ...input.messages] } };
  }
  if (cached.kind === "completion" && input.kind === "completion") {
    const prefix = cached.prompts[0] ?? "";
    const prompts: (string | number[])[] = [];
    for (const p of input.prompts) {
      if (typeof prefix === "string" && typeof p === "string") prompts.push(prefix + p);
      else if (typeof prefix !== "string" && typeof p !== "string") prompts.push([...prefix, ...p]);
      else {
        return bad(
          "the prompt and the context cache must both be text or both be token ids",
          "prompt",
        );
      }
    }
    return { ok: true, value: { kind: "completion", prompts } };
  }
  return bad(`Context cache ${id} holds a ${cached.kind} prefix; use it with that endpoint.`);
}
