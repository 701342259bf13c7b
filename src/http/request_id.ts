import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./env.ts";

const ACCEPTABLE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every request an id: the caller's `X-Request-Id` when it is a safe
 * token, otherwise a new UUID. It is echoed on the response, set on the
 * context for logs and problems, and lands in event metadata.
 */
export const requestId = (): MiddlewareHandler<AppEnv> =>
  async function requestId(c, next) {
    const given = c.req.header("x-request-id");
    const id = given && ACCEPTABLE.test(given) ? given : crypto.randomUUID();
    c.set("requestId", id);
    c.header("X-Request-Id", id);
    await next();
    c.res.headers.set("X-Request-Id", id);
  };
