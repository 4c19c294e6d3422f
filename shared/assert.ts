/** Invariant checks that stay on in production. Throw only for bugs, never for expected outcomes. */

export class InvariantError extends Error {
  override name = "InvariantError";
}

export function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new InvariantError(msg);
}
