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

/** One element of an `If-None-Match` list: an entity tag, weak or strong. */
const ENTITY_TAG = /^(?:W\/)?("[\x21\x23-\x7e\x80-\xff]*")$/;

/**
 * Whether an `If-None-Match` header matches `tag` (RFC 9110 §13.1.2): `*`
 * matches any current representation; otherwise a comma-separated list of
 * entity tags compared weakly (`W/"3"` matches `"3"`). A header that does not
 * parse matches nothing: the client gets the full response, never an error.
 */
export const noneMatch = (header: string | undefined, tag: string): boolean => {
  if (header === undefined) return false;
  const h = header.trim();
  if (h === "*") return true;
  const opaque = ENTITY_TAG.exec(tag)?.[1];
  if (opaque === undefined || h.length > 8192) return false;
  let hit = false;
  for (const element of h.split(",")) {
    const e = element.trim();
    if (e === "") continue; // the list syntax allows empty elements
    const m = ENTITY_TAG.exec(e);
    if (!m) return false;
    if (m[1] === opaque) hit = true;
  }
  return hit;
};
