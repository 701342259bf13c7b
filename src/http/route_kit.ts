import { z } from "@hono/zod-openapi";
import type { ProblemSlug } from "./problem.ts";
import type { Context } from "hono";
import type { AppEnv } from "./env.ts";
import { etag, noneMatch } from "./etag.ts";

/** An OpenAPI `content` entry for a JSON body or response. */
export const json = <T extends z.ZodType>(schema: T) => ({ "application/json": { schema } });

/** The OpenAPI security requirement of routes that need an access token. */
export const bearer = [{ bearer: [] }];

/**
 * A versioned resource ready to send: sets `ETag` (the stream version) and
 * `Cache-Control: no-store` (PHI must not linger in caches), drops `version`.
 */
export const versioned = <T extends { version: number }>(
  c: Context<AppEnv>,
  resource: T,
): Omit<T, "version"> => {
  c.header("ETag", etag(resource.version));
  c.header("Cache-Control", "no-store");
  const { version: _v, ...rest } = resource;
  return rest;
};

/** The request headers of a conditional read (OpenAPI `request.headers`). */
export const IF_NONE_MATCH = z.object({
  "if-none-match": z.string().optional().openapi({
    description: "`*` or ETags (weak comparison): 304 when the current ETag is among them",
    example: '"3"',
  }),
});

/** The 304 response of a conditional read (OpenAPI `responses`). */
export const NOT_MODIFIED = {
  304: {
    description: "Not modified: the ETag matched `If-None-Match`; no body (still an audited " +
      "read when the resource is PHI)",
    headers: z.object({ ETag: z.string().openapi({ example: '"3"' }) }),
  },
};

/**
 * Answers 304 (no body, `ETag` and `Cache-Control` kept) when the request's
 * `If-None-Match` matches `tag`; null otherwise. Call it after the read was
 * authorized and audited: a 304 shows the client the data it already holds.
 */
export const notModified = (c: Context<AppEnv>, tag: string): Response | null => {
  if (!noneMatch(c.req.header("if-none-match"), tag)) return null;
  c.header("ETag", tag);
  c.header("Cache-Control", "no-store");
  return c.body(null, 304);
};

/** A versioned resource as a 200 JSON body, or a 304 when `If-None-Match` matches. */
export const sendVersioned = <T extends { version: number }>(
  c: Context<AppEnv>,
  resource: T,
): Response => notModified(c, etag(resource.version)) ?? c.json(versioned(c, resource), 200);

/** The problems a write to a versioned resource can answer (If-Match included). */
export const VERSIONED_WRITE_PROBLEMS: ProblemSlug[] = [
  "unauthorized",
  "forbidden",
  "not-found",
  "validation",
  "conflict",
  "precondition-failed",
];

const LOCATION = z.string().openapi({
  description: "where the new resource is read",
  example: "/v1/patients/2f1c9b8e-4a3d-4f6e-9b7a-1c2d3e4f5a6b",
});
const ETAG = z.string().openapi({
  description: "the resource's version, for `If-Match` and `If-None-Match`",
  example: '"1"',
});

/** Headers of a 201 that sets `Location` (OpenAPI `responses[201].headers`). */
export const LOCATION_HEADERS = z.object({ Location: LOCATION });

/** Headers of a 201 that sets `Location` and the new resource's `ETag`. */
export const CREATED_HEADERS = z.object({ Location: LOCATION, ETag: ETAG });

/** `Content-Disposition` of a download (OpenAPI header schema). */
export const contentDisposition = (example: string) =>
  z.string().openapi({
    description: "how to present the download, with a file name",
    example,
  });
