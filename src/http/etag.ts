import type { Context } from "hono";
import { PreconditionFailedError } from "../errors.ts";

/** The ETag of a resource at a stream version. */
export const etag = (version: number): string => `"${version}"`;

/**
 * The expected version from `If-Match` (`"3"`, `W/"3"`), undefined when the
 * header is absent or `*`. Anything else is a 412: it cannot match.
 */
export const ifMatchVersion = (c: Context): number | undefined => {
  const h = c.req.header("if-match")?.trim();
  if (!h || h === "*") return undefined;
  const m = /^(?:W\/)?"(\d{1,9})"$/.exec(h);
  if (!m) throw new PreconditionFailedError("If-Match must be an ETag this API issued");
  return Number(m[1]);
};
