import type { Actor } from "../auth/policy.ts";
import type { Config } from "../config.ts";
import type { Drain } from "./drain.ts";
import type { Logger } from "../logger.ts";
import type { Runtime } from "../runtime.ts";

/** What handlers get from the app: configuration, logger and the store runtime. */
export interface AppDeps {
  config: Config;
  log: Logger;
  /**
   * The database runtime. Throws UnavailableError (503) while it is still
   * opening: the server answers /health before the database is ready.
   */
  runtime(): Runtime;
  /** Graceful shutdown state (the server passes its own; tests may omit it). */
  drain?: Drain;
}

export interface AppEnv {
  Variables: {
    requestId: string;
    deps: AppDeps;
    /** Set by `authenticate()`. */
    actor?: Actor;
    /**
     * Set by the first policy decision on a patient resource that allowed the
     * action: the grant (or proxy relation) it stood on, when only that let
     * the actor in. Every event the request then appends names it.
     */
    delegation?: { grantId?: string; onBehalfOf?: string };
  };
}
