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
 * The kinds of problem the API reports (RFC 9457): the one registry. `type`
 * is a stable URI per kind, resolvable on this server at `/problems/{slug}`,
 * where `about` is shown to a person (so it says what happened and what to do,
 * in words, never which record).
 */
export const PROBLEMS = {
  "validation": {
    status: 422,
    title: "Request validation failed",
    about: "A field, query parameter, path id or header did not meet the rules of this " +
      "route. `errors` lists every bad field with its path and the rule it broke. Fix those " +
      "fields and send the request again; nothing was changed.",
  },
  "invalid-cursor": {
    status: 422,
    title: "The cursor is not one this list issued",
    about: "Cursors are opaque and signed by the server. This one was altered, belongs to " +
      "another list or filter, or predates a new master key. Start the list again without a " +
      "cursor.",
  },
  "malformed-request": {
    status: 400,
    title: "Malformed request",
    about: "The request could not be read at all: a body that is not valid JSON, or a " +
      "multipart body that does not parse. Send a well-formed body with the matching " +
      "Content-Type.",
  },
  "unauthorized": {
    status: 401,
    title: "Authentication required",
    about: "The route needs a valid access token (`Authorization: Bearer …`) and there was " +
      "none, or it was expired, revoked or malformed. Log in or refresh the session, then " +
      "retry.",
  },
  "mfa-required": {
    status: 401,
    title: "A second factor is required",
    about: "The password was right, but this account has two-factor authentication: send the " +
      "current one-time code from the authenticator app with the login.",
  },
  "forbidden": {
    status: 403,
    title: "Access denied",
    about: "You are authenticated, but your role or your relation to this patient or clinic " +
      "does not allow this action. The attempt was recorded in the audit log. Ask for access " +
      "(a grant or an access request) instead of retrying.",
  },
  "mfa-enrolment-required": {
    status: 403,
    title: "Two-factor enrolment required",
    about: "Your role must use two-factor authentication. Until you enrol an authenticator " +
      "(`POST /v1/me/mfa/totp`, then confirm it) the session may only do that.",
  },
  "not-found": {
    status: 404,
    title: "Resource not found",
    about: "There is no such route, or no such record that you may know of. For records you " +
      "may not see, the API answers the same way, so that an id cannot be probed.",
  },
  "erased": {
    status: 410,
    title: "The record was erased",
    about: "The patient's record was erased (their key destroyed): what was personal is gone " +
      "for good and cannot be restored. The audit log still shows that it existed.",
  },
  "method-not-allowed": {
    status: 405,
    title: "Method not allowed",
    about: "The path exists but not with this HTTP method. The `Allow` header lists the " +
      "methods it takes.",
  },
  "request-timeout": {
    status: 408,
    title: "The request took too long to arrive",
    about: "The body did not arrive within the server's deadline (a stalled or very slow " +
      "client). Send it again over a better connection; nothing was stored.",
  },
  "conflict": {
    status: 409,
    title: "Conflict with the current state",
    about: "The request contradicts what is already recorded: a duplicate (an email, a " +
      "license number, a membership), or an action the record's current state does not allow " +
      "(for example an upload to a cancelled encounter). Read the resource and decide again.",
  },
  "illegal-transition": {
    status: 409,
    title: "The status cannot move that way",
    about: "The requested status change is not one of the allowed moves from the current " +
      "status (for example a final lab result back to ordered). Read the resource to see its " +
      "status.",
  },
  "concurrency-conflict": {
    status: 409,
    title: "The resource was changed by someone else",
    about: "Another request changed the same record at the same moment and won. Read it again " +
      "and, if your change still makes sense, send it with the new `ETag` in `If-Match`.",
  },
  "precondition-failed": {
    status: 412,
    title: "Precondition failed",
    about: "`If-Match` did not match the record's current `ETag`: it changed since you read " +
      "it (or the header is not an ETag this API issued). Read it again, then retry with the " +
      "new ETag.",
  },
  "payload-too-large": {
    status: 413,
    title: "Payload too large",
    about: "The body is larger than the server accepts: the JSON body limit, or the size " +
      "limit of an upload, enforced while it streams in. Send a smaller body or file.",
  },
  "unsupported-media-type": {
    status: 415,
    title: "Unsupported media type",
    about: "The file's type, decided from its bytes, is not one this category accepts, or " +
      "its name or declared type disagrees with its bytes. Upload a file of an accepted type.",
  },
  "corrupt-media": {
    status: 422,
    title: "The file is damaged or too large to decode",
    about: "The file could not be decoded safely: truncated or damaged, more pixels than the " +
      "limit, or suspicious compression. Export it again from the source and upload that.",
  },
  "malware-detected": {
    status: 422,
    title: "The file carries malware",
    about: "The malware scanner flagged the file, so it was not stored. Do not retry with the " +
      "same file; report it to your security contact.",
  },
  "invalid-code": {
    status: 422,
    title: "The code is not valid",
    about: "The one-time code is wrong. Each wrong attempt counts; after too many the request " +
      "is locked. Check the code and try again.",
  },
  "code-locked": {
    status: 409,
    title: "Too many wrong codes",
    about: "Too many wrong codes were tried, so this request or redeemer is locked. Ask the " +
      "patient for a new code.",
  },
  "code-used": {
    status: 409,
    title: "The code was already used",
    about: "One-time codes work once. Ask the patient for a new code.",
  },
  "code-expired": {
    status: 410,
    title: "The code has expired",
    about: "The code's time ran out before it was used. Ask the patient for a new code.",
  },
  "rate-limited": {
    status: 429,
    title: "Too many requests",
    about: "Too many attempts in a short time (logins, sign-ups, refreshes). Wait the " +
      "number of seconds in `Retry-After`, then retry.",
  },
  "internal": {
    status: 500,
    title: "Internal server error",
    about: "Something failed on the server. Nothing about the cause is shown; quote the " +
      "`requestId` to the operators, who can find it in the logs.",
  },
  "unavailable": {
    status: 503,
    title: "Service unavailable",
    about: "The server cannot answer now: it is starting, shutting down, its database is " +
      "unreachable or migrations are pending, or a queue (malware scan, image decoding) is " +
      "full. Retry after the seconds in `Retry-After`.",
  },
} as const satisfies Record<string, { status: number; title: string; about: string }>;

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

/** The headers a problem answer of some status carries (OpenAPI header objects). */
const PROBLEM_HEADERS: Record<number, Record<string, { description: string; schema: object }>> = {
  401: {
    "WWW-Authenticate": { description: "`Bearer`", schema: { type: "string", example: "Bearer" } },
  },
  405: {
    Allow: { description: "the methods the path takes", schema: { type: "string" } },
  },
  429: {
    "Retry-After": {
      description: "seconds to wait before retrying",
      schema: { type: "integer", minimum: 1, example: 30 },
    },
  },
  503: {
    "Retry-After": {
      description: "seconds to wait before retrying (when the server can tell)",
      schema: { type: "integer", minimum: 1, example: 5 },
    },
  },
};

/** An example problem body of one kind, as the API sends it. */
export const problemExample = (slug: ProblemSlug) => ({
  summary: PROBLEMS[slug].title,
  description: `[${problemType(slug)}](${problemType(slug)})`,
  value: {
    type: problemType(slug),
    title: PROBLEMS[slug].title,
    status: PROBLEMS[slug].status,
    instance: "/v1/…",
    requestId: "0f8a3c2e-5b1d-4e7a-9c61-2d4f8b7e1a90",
    ...(slug === "validation"
      ? {
        detail: "the request has invalid fields",
        errors: [{
          path: "name.family",
          message: "Too small: expected string to have >=1 characters",
        }],
      }
      : {}),
  },
});

/** The description of a response that answers any of these problem kinds. */
export const problemDescription = (slugs: readonly ProblemSlug[]): string =>
  slugs.map((s) => `${PROBLEMS[s].title} ([${problemType(s)}](${problemType(s)}))`).join("; or ");

/**
 * OpenAPI response entries for the given problem kinds, one per status: kinds
 * sharing a status (409 has several) are listed together, each with a named
 * example whose key is its slug.
 */
export const problemResponses = (...slugs: ProblemSlug[]) => {
  const byStatus = new Map<number, ProblemSlug[]>();
  for (const slug of new Set(slugs)) {
    const status = PROBLEMS[slug].status;
    byStatus.set(status, [...(byStatus.get(status) ?? []), slug]);
  }
  return Object.fromEntries([...byStatus].map(([status, kinds]) => [status, {
    description: problemDescription(kinds),
    ...(PROBLEM_HEADERS[status] ? { headers: PROBLEM_HEADERS[status] } : {}),
    content: {
      "application/problem+json": {
        schema: Problem,
        examples: Object.fromEntries(kinds.map((k) => [k, problemExample(k)])),
      },
    },
  }]));
};

/** The headers a problem answer of `status` carries, for documents built after the fact. */
export const problemHeaders = (status: number) => PROBLEM_HEADERS[status];

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
