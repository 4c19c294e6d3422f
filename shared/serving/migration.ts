/**
 * Request migration: a job whose instance failed (hung, lost, unreachable, engine failure,
 * dispatch refused for being unreachable) is re-run on another instance as a new attempt whose
 * prompt is the original prompt plus the tokens already delivered to the client, with the rest of
 * its max tokens and the same seed. Sampling draws hashUniform(seed, choice, position) and the
 * position of the next token is the same (prompt + delivered), so the continuation is the one
 * the failed instance would have produced. The worker splices the attempts' event streams into
 * one (`migratingEvents`): no duplicate, no gap; usage counts the original prompt and every
 * completion token once. Pure.
 *
 * Migratable: one prompt, one choice, no stop strings (a stop string's held-back text is not
 * delivered with its tokens, so a continuation could lose it). Others end with one error event.
 */
import { type ErrorInfo, errorInfo } from "../errors.ts";
import type { GenerateEvent, GenerateTask, JobSpec } from "../protocol/messages.ts";

/** Attempts a job may take in all (the first and its migrations). */
export const MAX_ATTEMPTS = 3;

/** How long a failed migratable task's job waits for the worker to resume it before it fails. */
export const RESUME_WAIT_MS = 5_000;

/** How long a failed instance gets no new work from a JobExecutor (it is recovered meanwhile). */
export const UNHEALTHY_FOR_MS = 30_000;

/** Error codes of a stream that ended because its instance failed (the job may migrate). */
const INSTANCE_FAILURE_CODES: readonly (string | null)[] = [
  "instance_failed",
  "instance_unavailable",
];

export function isInstanceFailure(e: ErrorInfo): boolean {
  return INSTANCE_FAILURE_CODES.includes(e.code);
}

/** The error of an instance that failed under a running task (`isInstanceFailure`). */
export function instanceFailed(reason: string): ErrorInfo {
  return errorInfo(
    "internal",
    `the engine failed (${reason}); the request was aborted`,
    null,
    "instance_failed",
  );
}

/** Whether a planned job can migrate (one sequence, no stop strings). */
export function isMigratable(task: Omit<GenerateTask, "taskId">): boolean {
  return task.prompts.length === 1 && task.n === 1 && task.sampling.stop.length === 0;
}

/**
 * The job spec of a continuation: the original prompt's ids plus the delivered tokens as the
 * prompt (not re-rendered), the rest of the max tokens, the same sampling and seed.
 */
export function continuationSpec(
  spec: JobSpec,
  task: Omit<GenerateTask, "taskId">,
  delivered: readonly number[],
): JobSpec {
  const prompt = task.prompts[0];
  if (!prompt) throw new Error("continuationSpec: the task has no prompt");
  return {
    ...spec,
    input: { kind: "completion", prompts: [[...prompt, ...delivered]] },
    n: 1,
    maxTokens: task.maxTokens - delivered.length,
  };
}

/** The continuation's task as planned, with the original's first-piece rule (before any output). */
export function continuationTask(
  planned: Omit<GenerateTask, "taskId">,
  original: Omit<GenerateTask, "taskId">,
  delivered: readonly number[],
): Omit<GenerateTask, "taskId"> {
  return {
    ...planned,
    stripLeadingSpace: original.stripLeadingSpace && delivered.length === 0,
  };
}

/** A later attempt's event in the original request's terms (`offset` tokens delivered before). */
function shifted(e: GenerateEvent, offset: number): GenerateEvent {
  if (offset === 0) return e;
  if (e.type === "finish") return { ...e, numOutputTokens: e.numOutputTokens + offset };
  if (e.type === "usage") {
    const promptTokens = e.promptTokens - offset;
    return {
      ...e,
      promptTokens,
      completionTokens: e.completionTokens + offset,
      ...(e.cachedTokens === undefined
        ? {}
        : { cachedTokens: Math.min(e.cachedTokens, promptTokens) }),
    };
  }
  return e;
}

/** The next attempt's events after the first's ended by instance failure, or null: no migration. */
export type Resume = (
  delivered: readonly number[],
  error: ErrorInfo,
) => Promise<AsyncIterable<GenerateEvent[]> | null>;

/**
 * One continuous event stream over a job's attempts: batches pass through while the token ids
 * of choice 0's deltas are counted as delivered; an error event of an instance failure (or a
 * stream that throws) asks `resume` for the next attempt's stream, whose events continue it
 * (finish and usage in the original request's terms). When `resume` gives none, the error event
 * ends the stream: exactly one.
 */
export async function* migratingEvents(
  first: AsyncIterable<GenerateEvent[]>,
  resume: Resume,
): AsyncGenerator<GenerateEvent[]> {
  const delivered: number[] = [];
  let source: AsyncIterable<GenerateEvent[]> | null = first;
  let offset = 0;
  while (source) {
    let failure: ErrorInfo | null = null;
    try {
      for await (const batch of source) {
        const out: GenerateEvent[] = [];
        for (const e of batch) {
          if (e.type === "error" && isInstanceFailure(e.error)) {
            failure = e.error;
            break;
          }
          if (e.type === "delta" && e.index === 0) delivered.push(...e.tokenIds);
          out.push(shifted(e, offset));
        }
        if (out.length > 0) yield out;
        if (failure) break;
      }
    } catch (e) {
      failure = errorInfo(
        "internal",
        `the instance's stream broke (${(e as Error).message}); the request was aborted`,
        null,
        "instance_failed",
      );
    }
    if (!failure) return;
    const next = await resume([...delivered], failure);
    if (!next) {
      yield [{ type: "error", error: failure }];
      return;
    }
    offset = delivered.length;
    source = next;
  }
}
