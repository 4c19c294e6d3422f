/** Hono context typing shared by every sub-app. */
import type { Logger } from "../shared/log.ts";
import type { Env } from "./env.ts";
import type { Principal } from "./middleware/auth.ts";

export interface AppEnv {
  Bindings: Env;
  Variables: { requestId: string; receivedAt: number; log: Logger; principal: Principal };
}
