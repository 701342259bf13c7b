import type { z } from "@hono/zod-openapi";
import type { ProblemSlug } from "./problem.ts";
import type { Context } from "hono";
import type { AppEnv } from "./env.ts";
import { etag } from "./etag.ts";

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

/** The problems a write to a versioned resource can answer (If-Match included). */
export const VERSIONED_WRITE_PROBLEMS: ProblemSlug[] = [
  "unauthorized",
  "forbidden",
  "not-found",
  "validation",
  "conflict",
  "precondition-failed",
];
