import type { MiddlewareHandler } from "hono";
import type { FieldIssue } from "../errors.ts";
import type { AppEnv } from "./env.ts";
import { problem } from "./problem.ts";

const NUL_MESSAGE = "must not contain NUL characters";
const JSON_TYPE = /^application\/([\w.-]+\+)?json\b/i;

/**
 * Refuses NUL characters before any handler runs: PostgreSQL cannot store
 * them in text or jsonb (22P05 / 22021), so one that reaches a query is a
 * 500 — and one in a path id once made an `AccessDenied` append fail, leaving
 * the denial unaudited. A path carrying `%00` is no resource of ours (404);
 * a query or JSON body value carrying one is a 422 naming the field.
 *
 * Cheap on the common path: a substring test on the URL, and on JSON bodies
 * a test of the text for the only spelling JSON has for NUL (`\u0000`); the
 * body is parsed again only when that spelling occurs. Hono caches the body
 * text, so the route's validator does not read the stream twice.
 *
 * @example
 * app.use("*", rejectNul({ skipBody: (c) => isUpload(c.req.method, c.req.path) }));
 */
export const rejectNul = (
  opts: { skipBody?: (method: string, path: string) => boolean } = {},
): MiddlewareHandler<AppEnv> =>
  async function rejectNul(c, next): Promise<Response | void> {
    const url = c.req.url;
    if (url.includes("%00") || url.includes("\0")) {
      const q = url.indexOf("?");
      const path = q < 0 ? url : url.slice(0, q);
      if (path.includes("%00") || path.includes("\0")) {
        return problem(c, "not-found", "no such resource");
      }
      const names = [...new URL(url).searchParams]
        .filter(([k, v]) => k.includes("\0") || v.includes("\0"))
        .map(([k]) => k.replaceAll("\0", "\\u0000"));
      if (names.length > 0) {
        return problem(c, "validation", "the request has invalid fields", {
          errors: [...new Set(names)].map((path) => ({ path, message: NUL_MESSAGE })),
        });
      }
    }
    const type = c.req.header("content-type");
    // not `c.req.raw.body !== null`: touching `body` makes Deno read the text through a stream
    if (type && JSON_TYPE.test(type) && !opts.skipBody?.(c.req.method, c.req.path)) {
      let text: string | null = null;
      try {
        text = await c.req.text();
      } catch {
        // too large or cut short: the body limit and the validator answer for it
      }
      if (text !== null && (text.includes("\\u0000") || text.includes("\0"))) {
        const errors = nulFields(text);
        if (errors.length > 0) {
          return problem(c, "validation", "the request has invalid fields", { errors });
        }
      }
    }
    return await next();
  };

/** Every string (or key) in a JSON document that carries NUL, by dotted path. */
const nulFields = (text: string): FieldIssue[] => {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return []; // not JSON: the validator reports it as malformed
  }
  const found: FieldIssue[] = [];
  const walk = (v: unknown, path: string[]) => {
    if (found.length >= 50) return;
    if (typeof v === "string") {
      if (v.includes("\0")) found.push({ path: path.join("."), message: NUL_MESSAGE });
    } else if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, [...path, String(i)]));
    } else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        const key = k.replaceAll("\0", "\\u0000");
        if (k.includes("\0")) found.push({ path: [...path, key].join("."), message: NUL_MESSAGE });
        else walk(x, [...path, key]);
      }
    }
  };
  walk(doc, []);
  return found;
};
