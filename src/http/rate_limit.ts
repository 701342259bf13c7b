import type { Context, MiddlewareHandler } from "hono";
import { getConnInfo } from "hono/deno";
import { problem, type ProblemSlug } from "./problem.ts";

export interface RateLimiterOptions {
  /** Length of one window, in milliseconds. */
  windowMs: number;
  /** Hits allowed per key in one window. */
  max: number;
  /** Keys tracked at most; past it the oldest window is dropped. Default 10 000. */
  maxKeys?: number;
  /** The clock, injectable for tests. Default `Date.now`. */
  now?: () => number;
}

export interface RateLimitVerdict {
  allowed: boolean;
  /** Whole seconds until the key's window ends; 0 when allowed. */
  retryAfterSec: number;
}

interface Window {
  count: number;
  resetAt: number;
}

const positiveInteger = (n: number) => Number.isSafeInteger(n) && n > 0;

/**
 * Counts hits per key in fixed windows, in memory. A fixed window is the
 * simplest scheme that gives an exact `Retry-After`; its known cost is that
 * a client can spend `max` at the end of one window and `max` again at the
 * start of the next. For brute-force protection that burst of 2*max is
 * acceptable; size `max` with it in mind.
 *
 * Memory stays bounded: a key's entry is re-inserted whenever its window
 * starts, so the map is ordered by window end and expired entries are
 * pruned from its front on every hit. When `maxKeys` live keys are tracked
 * the oldest is dropped: a flood of new keys can reset an old key's count,
 * which is better than refusing every new client (locking everyone out).
 *
 * The counts live in one process: with several instances each counts alone.
 *
 * @example
 * ```ts
 * const logins = new RateLimiter({ windowMs: 15 * 60_000, max: 10 });
 * const { allowed, retryAfterSec } = logins.hit(`login:${email}`);
 * ```
 */
export class RateLimiter {
  readonly windowMs: number;
  readonly max: number;
  readonly maxKeys: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();

  constructor({ windowMs, max, maxKeys = 10_000, now = Date.now }: RateLimiterOptions) {
    if (!positiveInteger(windowMs)) throw new RangeError("rate limit windowMs must be > 0");
    if (!positiveInteger(max)) throw new RangeError("rate limit max must be > 0");
    if (!positiveInteger(maxKeys)) throw new RangeError("rate limit maxKeys must be > 0");
    this.windowMs = windowMs;
    this.max = max;
    this.maxKeys = maxKeys;
    this.#now = now;
  }

  /** Counts one hit for `key` and says whether it is within the limit. */
  hit(key: string): RateLimitVerdict {
    const now = this.#now();
    this.#prune(now);
    let window = this.#windows.get(key);
    if (!window || window.resetAt <= now) {
      this.#windows.delete(key);
      if (this.#windows.size >= this.maxKeys) {
        this.#windows.delete(this.#windows.keys().next().value!);
      }
      window = { count: 0, resetAt: now + this.windowMs };
      this.#windows.set(key, window);
    }
    // stop counting past the limit: the verdict is the same and the number stays small
    if (window.count <= this.max) window.count++;
    if (window.count <= this.max) return { allowed: true, retryAfterSec: 0 };
    return { allowed: false, retryAfterSec: Math.max(1, Math.ceil((window.resetAt - now) / 1000)) };
  }

  /** Forgets a key, e.g. after a successful login. */
  reset(key: string): void {
    this.#windows.delete(key);
  }

  /** Keys currently tracked. */
  get size(): number {
    return this.#windows.size;
  }

  #prune(now: number): void {
    for (const [key, window] of this.#windows) {
      if (window.resetAt > now) return;
      this.#windows.delete(key);
    }
  }
}

export interface RateLimitOptions extends RateLimiterOptions {
  /** What to count by: a client address, an account, or both. */
  key: (c: Context) => string;
  /** The problem answered when over the limit. Default "rate-limited" (429). */
  slug?: ProblemSlug;
}

/**
 * Limits requests per key; over the limit it answers with a problem and a
 * `Retry-After`, and the handler is not run. Bad options throw at setup.
 *
 * @example
 * ```ts
 * auth.post("/login", rateLimit({ windowMs: 60_000, max: 10, key: (c) => clientIp(c) }), login);
 * ```
 */
export const rateLimit = (
  { key, slug = "rate-limited", ...limits }: RateLimitOptions,
): MiddlewareHandler => {
  const limiter = new RateLimiter(limits);
  return async function rateLimit(c, next) {
    const { allowed, retryAfterSec } = limiter.hit(key(c));
    if (!allowed) {
      return problem(c, slug, "too many requests; retry later", {
        headers: { "Retry-After": String(retryAfterSec) },
      });
    }
    await next();
    return undefined;
  };
};

// an IPv4 or IPv6 literal's alphabet, at most 45 characters; anything else
// in X-Forwarded-For is not an address and must not become a map key
const ADDRESS = /^[0-9A-Fa-f:.]{2,45}$/;

/**
 * The client's address: the TCP peer of the connection. X-Forwarded-For is
 * written by whoever sends the request, so trusting it by default would let
 * any client pick a fresh address per request and walk past every per-IP
 * limit. Pass `trustProxy` only when the server is reachable solely through
 * a proxy that overwrites the header; its first hop is then the client. (A
 * proxy that appends to the header leaves the first hop in the client's hands.)
 *
 * Without connection info (`app.request()` in tests, Unix sockets) it is "unknown".
 */
export const clientIp = (
  c: Context,
  { trustProxy = false }: { trustProxy?: boolean } = {},
): string => {
  if (trustProxy) {
    const first = c.req.header("x-forwarded-for")?.split(",")[0]?.trim();
    if (first && ADDRESS.test(first)) return first;
  }
  // getConnInfo reads c.env.remoteAddr, which only Deno.serve provides: asked
  // without it, it throws, and an exception a request cost a request served
  // in process about 25 us
  if (!(c.env as { remoteAddr?: unknown } | undefined)?.remoteAddr) return "unknown";
  try {
    return getConnInfo(c).remote.address ?? "unknown";
  } catch {
    return "unknown";
  }
};
