import type { Context, MiddlewareHandler } from "hono";
import { HTTPException } from "hono/http-exception";
import { RequestTimeoutError } from "../errors.ts";
import type { Drain } from "./drain.ts";
import { problem } from "./problem.ts";

export interface RequestBodyOptions {
  /** Largest body accepted (413 above it), checked on the header and while reading. */
  maxBytes: number;
  /** How long the whole body may take to arrive (408 after). */
  timeoutSec: number;
  /** Requests that read their body themselves (uploads stream theirs). */
  skip: (c: Context) => boolean;
  /** Counts bodies still arriving, for a graceful shutdown. */
  drain?: Drain;
}

/**
 * Reads every request body in full before the route runs, with a size limit
 * and a deadline: a client trickling a body (also to the unauthenticated
 * login) cannot hold a connection and its handler open for ever. The route
 * then reads the buffered copy.
 *
 * The copy is a new `Request` built from the URL, method and headers, not
 * from the original request: `new Request(request, …)` reads `request.signal`,
 * after which Deno prints a non-JSON warning to the log on every response.
 *
 * @example
 * app.use("*", requestBody({ maxBytes: 1 << 20, timeoutSec: 30, skip: () => false }));
 */
export const requestBody = (opts: RequestBodyOptions): MiddlewareHandler =>
  async function requestBody(c, next) {
    const body = c.req.raw.body;
    if (!body || opts.skip(c)) return await next();
    const tooLarge = () =>
      problem(c, "payload-too-large", `the body exceeds ${opts.maxBytes} bytes`);
    if (Number(c.req.header("content-length") ?? 0) > opts.maxBytes) {
      await body.cancel().catch(() => {});
      return tooLarge();
    }
    const read = () => readAll(body, opts);
    const bytes = await (opts.drain ? opts.drain.receiving(read) : read());
    if (!bytes) return tooLarge();
    c.req.raw = new Request(c.req.url, {
      method: c.req.method,
      headers: c.req.raw.headers,
      body: bytes,
    });
    return await next();
  };

/** The whole body; null when it exceeds the limit. Throws 408 past the deadline. */
const readAll = async (
  body: ReadableStream<Uint8Array>,
  opts: RequestBodyOptions,
): Promise<Uint8Array<ArrayBuffer> | null> => {
  const reader = body.getReader();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    reader.cancel().catch(() => {});
  }, opts.timeoutSec * 1000);
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > opts.maxBytes) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } catch (err) {
    if (!timedOut) {
      throw new HTTPException(400, { message: "the body could not be read", cause: err });
    }
  } finally {
    clearTimeout(timer);
  }
  if (timedOut) {
    throw new RequestTimeoutError(`the body took longer than ${opts.timeoutSec} s to arrive`);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
};
