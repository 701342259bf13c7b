/**
 * Typed errors of the domain and the store. They know nothing of HTTP: one
 * table in src/http/problem.ts maps them to RFC 9457 problem responses.
 * Messages never carry PHI: ids, versions and enums only.
 */
export class ChartlogError extends Error {
  override name = "ChartlogError";
}

export interface FieldIssue {
  path: string;
  message: string;
}

/** Input that fails validation; `issues` names every bad field. */
export class ValidationError extends ChartlogError {
  override name = "ValidationError";
  constructor(message: string, readonly issues: FieldIssue[] = []) {
    super(message);
  }
}

/** An event type the catalogue does not know. */
export class UnknownEventTypeError extends ValidationError {
  override name = "UnknownEventTypeError";
  constructor(readonly eventType: string) {
    super(`unknown event type: ${eventType}`, [{ path: "type", message: "unknown event type" }]);
  }
}

/** Optimistic concurrency: the stream was not at the expected version. */
export class ConcurrencyError extends ChartlogError {
  override name = "ConcurrencyError";
  constructor(
    readonly streamId: string,
    readonly expected: number | "no_stream" | "any",
    readonly actual: number,
  ) {
    super(`stream ${streamId} is at version ${actual}, expected ${expected}`);
  }
}

export class NotFoundError extends ChartlogError {
  override name = "NotFoundError";
}

/** The record was erased (crypto-shredded): it is gone for good (HTTP 410). */
export class GoneError extends ChartlogError {
  override name = "GoneError";
}

/** A command that is illegal in the current state. */
export class ConflictError extends ChartlogError {
  override name = "ConflictError";
}

/** A move a status machine does not allow (a lab test completed twice, cancelled after completion). */
export class IllegalTransitionError extends ConflictError {
  override name = "IllegalTransitionError";
}

export class ForbiddenError extends ChartlogError {
  override name = "ForbiddenError";
}

/** Refused until the account enrols a second factor (its role requires one). */
export class MfaEnrolmentRequiredError extends ForbiddenError {
  override name = "MfaEnrolmentRequiredError";
}

/**
 * A dependency (database, audit append) is unavailable; fail closed. HTTP
 * answers 503 with `Retry-After`. `code` is the driver's code (e.g.
 * `ECONNREFUSED`, `57P01`) for logs; it never carries a message.
 */
export class UnavailableError extends ChartlogError {
  override name = "UnavailableError";
  readonly code?: string;
  constructor(message: string, options?: ErrorOptions & { code?: string }) {
    super(message, options);
    this.code = options?.code;
  }
}

/** Missing or invalid credentials (HTTP 401). */
export class UnauthorizedError extends ChartlogError {
  override name = "UnauthorizedError";
}

/** Too many attempts; try again after `retryAfterSec` (HTTP 429). */
export class TooManyRequestsError extends ChartlogError {
  override name = "TooManyRequestsError";
  constructor(message: string, readonly retryAfterSec: number) {
    super(message);
  }
}

/** A precondition (If-Match) does not hold (HTTP 412). */
export class PreconditionFailedError extends ChartlogError {
  override name = "PreconditionFailedError";
}

/** Password accepted; a second factor (TOTP or recovery code) is needed (HTTP 401). */
export class MfaRequiredError extends UnauthorizedError {
  override name = "MfaRequiredError";
}

/** The client took too long to send its request (HTTP 408). */
export class RequestTimeoutError extends ChartlogError {
  override name = "RequestTimeoutError";
}

/** Why an upload was refused; each is also recorded in an `UploadRejected` event. */
export const REJECTION_REASONS = [
  "too_large",
  "type_not_allowed",
  "type_mismatch",
  "corrupt",
  "too_many_pixels",
  "malware",
  "encounter_cancelled",
  "forbidden",
  "scan_failed",
  "suspicious_compression",
  "busy",
] as const;
export type RejectionReason = (typeof REJECTION_REASONS)[number];

/**
 * An upload the pipeline refuses. The HTTP status follows the reason:
 * too_large 413, type_not_allowed and type_mismatch 415, encounter_cancelled
 * 409, forbidden 403, scan_failed and busy 503 (busy with `retryAfterSec`),
 * the rest 422. The message names no content.
 */
export class UploadRejectedError extends ChartlogError {
  override name = "UploadRejectedError";
  constructor(
    readonly reason: RejectionReason,
    message: string,
    readonly retryAfterSec?: number,
  ) {
    super(message);
  }
}

/** Why a one-time access code was refused (each attempt is also an event). */
export type CodeRejection = "invalid" | "locked" | "used" | "expired";

/**
 * A one-time access code refused: a wrong code (422), a dead request or a
 * blocked redeemer (409), a used one (409), an expired one (410). The
 * message never quotes the code.
 */
export class CodeRejectedError extends ChartlogError {
  override name = "CodeRejectedError";
  constructor(readonly reason: CodeRejection, message: string) {
    super(message);
  }
}
