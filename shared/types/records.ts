/**
 * DeepFlow's request -> job -> task records as the API shows them. Plain types only.
 * Timestamps are epoch milliseconds (`*At`), null until the event happens.
 */

export type RequestStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export type JobStatus = RequestStatus;
export type TaskStatus = RequestStatus;
export type TaskRole = "colocated" | "prefill" | "decode" | "attention" | "expert";

export interface Timestamps {
  receivedAt: number;
  queuedAt: number | null;
  startedAt: number | null;
  firstTokenAt: number | null;
  finishedAt: number | null;
}

export interface TaskRecord extends Omit<Timestamps, "receivedAt"> {
  id: string;
  jobId: string;
  role: TaskRole;
  status: TaskStatus;
  instanceId: string;
  npu: string;
  numPromptTokens: number | null;
  numCompletionTokens: number | null;
  error: string | null;
}

export interface JobRecord extends Omit<Timestamps, "receivedAt"> {
  id: string;
  requestId: string;
  kind: string;
  status: JobStatus;
  tasks: TaskRecord[];
}

export interface RequestRecord extends Timestamps {
  id: string;
  object: "request";
  tenant: string;
  model: string;
  kind: string;
  status: RequestStatus;
  clientRequestId: string | null;
  error: string | null;
  jobs: JobRecord[];
}

export function isTerminal(s: RequestStatus): boolean {
  return s === "succeeded" || s === "failed" || s === "cancelled";
}
