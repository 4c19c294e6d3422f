/** Server-minted ids (the engine and shared/ never mint ids). */

function uuid(): string {
  return crypto.randomUUID().replaceAll("-", "");
}

export const newRequestId = () => `req_${uuid()}`;
export const newJobId = () => `job_${uuid()}`;
export const newContextCacheId = () => `ctx_${uuid()}`;
export const newCompletionId = (chat: boolean) => `${chat ? "chatcmpl" : "cmpl"}-${uuid()}`;

/** A sampling seed for requests that sent none (a uniform 31-bit integer). */
export function drawSeed(): number {
  return (crypto.getRandomValues(new Uint32Array(1))[0] as number) >>> 1;
}

export const newDeploymentId = () => `dep_${uuid().slice(0, 16)}`;
