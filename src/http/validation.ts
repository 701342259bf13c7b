import type { Context } from "hono";
import type { z } from "zod";
import { today } from "../clinical/patients.ts";
import { checkDates } from "../domain/patient.ts";
import type { FieldIssue } from "../errors.ts";
import type { AppEnv } from "./env.ts";
import { problem } from "./problem.ts";

/**
 * zod issues as problem `errors`, one per bad field. An unknown key is named
 * in `path` (zod reports it on the enclosing object, with an empty path).
 */
export const fieldIssues = (issues: readonly z.core.$ZodIssue[]): FieldIssue[] =>
  issues.flatMap((i) =>
    i.code === "unrecognized_keys"
      ? i.keys.map((k) => ({ path: [...i.path, k].join("."), message: "unknown field" }))
      : [{ path: i.path.join("."), message: i.message }]
  );

/**
 * Field rules that need the request's clock, so no static schema can hold
 * them; the deciders apply them too, with the same clock. Here they only
 * join a 422 the schema already fails, so that one answer lists every bad
 * field instead of the date coming back alone on the next try.
 */
const CLOCK_RULES: Record<string, (value: string, today: string) => FieldIssue[]> = {
  dateOfBirth: (v, t) => (/^\d{4}-\d{2}-\d{2}$/.test(v) ? checkDates(v, t) : []),
};

const clockIssues = (c: Context<AppEnv>, body: unknown, flagged: FieldIssue[]): FieldIssue[] => {
  if (body === null || typeof body !== "object" || Array.isArray(body)) return [];
  let day: string;
  try {
    day = today(c.var.deps.runtime().sessions.now());
  } catch {
    return []; // the database is still opening: the schema's issues stand alone
  }
  return Object.entries(CLOCK_RULES).flatMap(([field, rule]) => {
    const v = (body as Record<string, unknown>)[field];
    return typeof v === "string" && !flagged.some((f) => f.path === field) ? rule(v, day) : [];
  });
};

/** The validation hook of every route: a failed schema is one 422 naming every bad field. */
export const validationHook = (
  result: { success: boolean; error?: z.ZodError; data?: unknown; target: string },
  c: Context<AppEnv>,
): Response | undefined => {
  if (result.success || !result.error) return undefined;
  const errors = fieldIssues(result.error.issues);
  // on failure `data` is the input as received
  if (result.target === "json") errors.push(...clockIssues(c, result.data, errors));
  return problem(c, "validation", "the request has invalid fields", { errors });
};
