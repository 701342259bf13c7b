import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import {
  CodeRejectedError,
  type CodeRejection,
  ConcurrencyError,
  ConflictError,
  type FieldIssue,
  ForbiddenError,
  GoneError,
  IllegalTransitionError,
  MfaEnrolmentRequiredError,
  MfaRequiredError,
  NotFoundError,
  PreconditionFailedError,
  RequestTimeoutError,
  TooManyRequestsError,
  UnauthorizedError,
  UnavailableError,
  UploadRejectedError,
  ValidationError,
} from "../errors.ts";
import { InvalidCursorError } from "../store/cursor.ts";
import { pgCode } from "../store/db.ts";
import type { AppEnv } from "./env.ts";

/**
 * The kinds of problem the API reports (RFC 9457). `type` is a stable URI
 * per kind, resolvable on this server at `/problems/{slug}`.
 */
export const PROBLEMS = {
  "validation": { status: 422, title: "Request validation failed" },
  "invalid-cursor": { status: 422, title: "The cursor is not one this list issued" },
  "malformed-request": { status: 400, title: "Malformed request" },
  "unauthorized": { status: 401, title: "Authentication required" },
  "mfa-required": { status: 401, title: "A second factor is required" },
  "forbidden": { status: 403, title: "Access denied" },
  "mfa-enrolment-required": { status: 403, title: "Two-factor enrolment required" },
  "not-found": { status: 404, title: "Resource not found" },
  "erased": { status: 410, title: "The record was erased" },
  "method-not-allowed": { status: 405, title: "Method not allowed" },
  "request-timeout": { status: 408, title: "The request took too long to arrive" },
  "conflict": { status: 409, title: "Conflict with the current state" },
  "illegal-transition": { status: 409, title: "The status cannot move that way" },
  "concurrency-conflict": { status: 409, title: "The resource was changed by someone else" },
  "precondition-failed": { status: 412, title: "Precondition failed" },
  "payload-too-large": { status: 413, title: "Payload too large" },
  "unsupported-media-type": { status: 415, title: "Unsupported media type" },
  "corrupt-media": { status: 422, title: "The file is damaged or too large to decode" },
  "malware-detected": { status: 422, title: "The file carries malware" },
  "invalid-code": { status: 422, title: "The code is not valid" },
  "code-locked": { status: 409, title: "Too many wrong codes" },
  "code-used": { status: 409, title: "The code was already used" },
  "code-expired": { status: 410, title: "The code has expired" },
  "rate-limited": { status: 429, title: "Too many requests" },
  "internal": { status: 500, title: "Internal server error" },
  "unavailable": { status: 503, title: "Service unavailable" },
} as const satisfies Record<string, { status: number; title: string }>;

export type ProblemSlug = keyof typeof PROBLEMS;

export const problemType = (slug: ProblemSlug): string => `/problems/${slug}`;

export const Problem = z.object({
  type: z.string().openapi({ example: "/problems/validation" }),
  title: z.string(),
  status: z.number().int(),
  detail: z.string().optional(),
  instance: z.string().optional(),
  requestId: z.string().optional(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
}).openapi("Problem", {
  description: "RFC 9457 problem details. `detail` never carries PHI.",
});
export type Problem = z.infer<typeof Problem>;

/** OpenAPI response entries for the given problem statuses. */
export const problemResponses = (...slugs: ProblemSlug[]) =>
  Object.fromEntries(slugs.map((slug) => [PROBLEMS[slug].status, {
    description: PROBLEMS[slug].title,
    content: { "application/problem+json": { schema: Problem } },
  }]));

/** Builds a problem+json response. */
export const problem = (
  c: Context<AppEnv>,
  slug: ProblemSlug,
  detail?: string,
  extra: { errors?: FieldIssue[]; headers?: Record<string, string> } = {},
): Response => {
  const { status, title } = PROBLEMS[slug];
  const body: Problem = {
    type: problemType(slug),
    title,
    status,
    ...(detail ? { detail } : {}),
    instance: new URL(c.req.url).pathname,
    requestId: c.get("requestId"),
    ...(extra.errors ? { errors: extra.errors } : {}),
  };
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/problem+json", ...extra.headers },
  });
};

/**
 * The one table from typed errors to problems. Anything unknown is a 500
 * whose detail says nothing about the cause.
 */
export const problemFor = (
  err: unknown,
): {
  slug: ProblemSlug;
  detail?: string;
  errors?: FieldIssue[];
  headers?: Record<string, string>;
} => {
  if (err instanceof InvalidCursorError) {
    return { slug: "invalid-cursor", detail: err.message, errors: err.issues };
  }
  if (err instanceof ValidationError) {
    return { slug: "validation", detail: err.message, errors: err.issues };
  }
  if (err instanceof CodeRejectedError) {
    return { slug: CODE_PROBLEMS[err.reason], detail: err.message };
  }
  if (err instanceof ConcurrencyError) return { slug: "concurrency-conflict", detail: err.message };
  if (err instanceof IllegalTransitionError) {
    return { slug: "illegal-transition", detail: err.message };
  }
  if (err instanceof ConflictError) return { slug: "conflict", detail: err.message };
  if (err instanceof NotFoundError) return { slug: "not-found", detail: err.message };
  if (err instanceof GoneError) return { slug: "erased", detail: err.message };
  if (err instanceof MfaEnrolmentRequiredError) {
    return { slug: "mfa-enrolment-required", detail: err.message };
  }
  if (err instanceof ForbiddenError) return { slug: "forbidden", detail: err.message };
  if (err instanceof MfaRequiredError) {
    return { slug: "mfa-required", detail: err.message, headers: { "WWW-Authenticate": "Bearer" } };
  }
  if (err instanceof UnauthorizedError) {
    return { slug: "unauthorized", detail: err.message, headers: { "WWW-Authenticate": "Bearer" } };
  }
  if (err instanceof TooManyRequestsError) {
    return {
      slug: "rate-limited",
      detail: err.message,
      headers: { "Retry-After": String(err.retryAfterSec) },
    };
  }
  if (err instanceof PreconditionFailedError) {
    return { slug: "precondition-failed", detail: err.message };
  }
  if (err instanceof UnavailableError) {
    return {
      slug: "unavailable",
      detail: err.message,
      headers: { "Retry-After": RETRY_AFTER_SEC },
    };
  }
  if (err instanceof RequestTimeoutError) return { slug: "request-timeout", detail: err.message };
  if (err instanceof UploadRejectedError) {
    return {
      slug: UPLOAD_PROBLEMS[err.reason],
      detail: err.message,
      ...(err.retryAfterSec ? { headers: { "Retry-After": String(err.retryAfterSec) } } : {}),
    };
  }
  // the last resort behind rejectNul: text PostgreSQL cannot store is the client's, not a 500
  const code = pgCode(err);
  if (code === "22P05" || code === "22021") {
    return { slug: "validation", detail: "the request has text that cannot be stored (NUL)" };
  }
  if (err instanceof HTTPException) {
    const slug = (Object.keys(PROBLEMS) as ProblemSlug[])
      .find((s) => PROBLEMS[s].status === err.status);
    return { slug: slug ?? "internal" };
  }
  return { slug: "internal" };
};

/** What a 503 asks a client to wait before trying again. */
const RETRY_AFTER_SEC = "5";

/** The problem each reason for refusing a one-time access code answers with. */
const CODE_PROBLEMS: Record<CodeRejection, ProblemSlug> = {
  invalid: "invalid-code",
  locked: "code-locked",
  used: "code-used",
  expired: "code-expired",
};

/** The problem each reason for refusing an upload answers with. */
const UPLOAD_PROBLEMS: Record<UploadRejectedError["reason"], ProblemSlug> = {
  too_large: "payload-too-large",
  type_not_allowed: "unsupported-media-type",
  type_mismatch: "unsupported-media-type",
  corrupt: "corrupt-media",
  too_many_pixels: "corrupt-media",
  malware: "malware-detected",
  encounter_cancelled: "conflict",
  forbidden: "forbidden",
  scan_failed: "unavailable",
  suspicious_compression: "corrupt-media",
  busy: "unavailable",
};
