import { z } from "@hono/zod-openapi";
import type { ChartKindName } from "../../events/chart.ts";
import type { FieldIssue } from "../errors.ts";
import { type Query, sql } from "../store/sql.ts";

/** A chart entry's clinical fields, as the API names them. */
export type Content = Record<string, unknown>;

/** What the list filters read, derived from an entry's content (null: not known). */
export interface Facets {
  /** The entry's clinical date (`from`/`to`), YYYY-MM-DD; null: the day it was recorded. */
  clinicalDate: string | null;
  critical: boolean | null;
  startDate: string | null;
  endDate: string | null;
  dueDate: string | null;
}

/**
 * One kind of chart entry: its fields (a strict zod object, every field of
 * the issue's list), the rules across fields or against today, what the
 * projection derives for lists, and the list's own query parameters. A new
 * kind (visits, lab tests, vaccinations) is one more entry in {@link KINDS}
 * and its name in CHART_KINDS: routes, events, projection and policy are
 * generic.
 */
export interface ChartKind {
  name: ChartKindName;
  /** The fields; each optional one may be null. */
  fields: z.ZodObject;
  /** Cross-field and clock rules on the whole content (after an amendment too). */
  check: (c: Content, today: string) => FieldIssue[];
  /** Patients and full proxies may add these (marked patient-entered). */
  patientMayEnter: boolean;
  /** Ids of practitioners named in the content (they must be practitioner users). */
  practitionerFields: readonly string[];
  /** Ids of media named in the content (they must be the same patient's, not deleted). */
  mediaFields: readonly string[];
  facets: (c: Content) => Facets;
  /** The kind's extra list parameters (query strings). */
  query: z.ZodObject;
  /** The SQL (`and …` on chart_entries) of those parameters, days counted in UTC. */
  where: (q: Record<string, string | undefined>, today: string) => Query[];
}

const text = (max: number) => z.string().trim().min(1).max(max);
const optText = (max: number) => text(max).nullable().optional();
const date = z.iso.date();
const DAYS = z.string().regex(/^\d{1,4}$/, "a whole number of days (0–9999)");

/** YYYY-MM-DD plus `n` days. */
export const addDays = (day: string, n: number): string =>
  new Date(Date.parse(`${day}T00:00:00Z`) + n * 86_400_000).toISOString().slice(0, 10);

export const ALLERGY_TYPES = ["food", "medication", "environmental", "other"] as const;
export const ALLERGY_SEVERITIES = ["mild", "moderate", "severe", "life_threatening"] as const;
const CRITICAL = ["severe", "life_threatening"];

const allergies: ChartKind = {
  name: "allergies",
  fields: z.strictObject({
    allergen: text(200),
    type: z.enum(ALLERGY_TYPES),
    severity: z.enum(ALLERGY_SEVERITIES),
    symptoms: optText(2000),
    reaction: optText(2000),
    diagnosedById: z.uuid().nullable().optional(),
  }),
  check: () => [],
  patientMayEnter: true,
  practitionerFields: ["diagnosedById"],
  mediaFields: [],
  facets: (c) => ({
    clinicalDate: null,
    critical: typeof c.severity === "string" ? CRITICAL.includes(c.severity) : null,
    startDate: null,
    endDate: null,
    dueDate: null,
  }),
  query: z.object({
    critical: z.enum(["true", "false"]).optional().openapi({
      description: "true: severe and life-threatening allergies only; false: the others",
    }),
  }),
  where: (q) => q.critical ? [sql`and critical = ${q.critical === "true"}`] : [],
};

export const ROUTES = [
  "oral",
  "sublingual",
  "buccal",
  "topical",
  "transdermal",
  "inhaled",
  "nasal",
  "ophthalmic",
  "otic",
  "rectal",
  "vaginal",
  "subcutaneous",
  "intramuscular",
  "intravenous",
  "other",
] as const;

/** An amount and a unit: `500 mg`, `2.5 ml`, `1-2 tablets`, `10 units`, `1 puff`. */
export const DOSAGE =
  /^\d{1,5}(?:\.\d{1,3})?(?:\s?-\s?\d{1,5}(?:\.\d{1,3})?)?\s?(?:mg|g|mcg|µg|ug|ng|ml|l|iu|units?|tablets?|capsules?|drops?|puffs?|patch(?:es)?|sprays?|sachets?|suppositor(?:y|ies)|%)$/i;

/** A prescription's last day: its end date, else start + duration − 1, else open. */
const lastDay = (c: Content): string | null =>
  typeof c.endDate === "string"
    ? c.endDate
    : typeof c.startDate === "string" && typeof c.durationDays === "number"
    ? addDays(c.startDate, c.durationDays - 1)
    : null;

const prescriptions: ChartKind = {
  name: "prescriptions",
  fields: z.strictObject({
    medication: text(200),
    dosage: z.string().trim().max(40).regex(DOSAGE, "an amount and a unit, e.g. 500 mg"),
    frequency: text(100),
    route: z.enum(ROUTES),
    durationDays: z.number().int().min(1).max(3650).nullable().optional(),
    instructions: optText(2000),
    prescriberId: z.uuid().nullable().optional(),
    startDate: date,
    endDate: date.nullable().optional(),
    quantity: z.number().positive().max(100_000).nullable().optional(),
    refillsAllowed: z.number().int().min(0).max(99).nullable().optional(),
  }),
  check: (c) =>
    typeof c.startDate === "string" && typeof c.endDate === "string" && c.endDate < c.startDate
      ? [{ path: "endDate", message: "must not be before startDate" }]
      : [],
  patientMayEnter: true,
  practitionerFields: ["prescriberId"],
  mediaFields: [],
  facets: (c) => ({
    clinicalDate: typeof c.startDate === "string" ? c.startDate : null,
    critical: null,
    startDate: typeof c.startDate === "string" ? c.startDate : null,
    endDate: lastDay(c),
    dueDate: null,
  }),
  query: z.object({
    active: z.enum(["true", "false"]).optional().openapi({
      description: "true: started and not yet ended today (UTC); false: the others",
    }),
    endingWithinDays: DAYS.optional().openapi({
      description: "ending today or within this many days (UTC)",
    }),
  }),
  where: (q, today) => [
    ...(q.active
      ? [
        q.active === "true"
          ? sql`and start_date <= ${today}::date and (end_date is null or end_date >= ${today}::date)`
          : sql`and not (start_date <= ${today}::date
              and (end_date is null or end_date >= ${today}::date))`,
      ]
      : []),
    ...(q.endingWithinDays !== undefined
      ? [sql`and end_date between ${today}::date
          and ${addDays(today, Number(q.endingWithinDays))}::date`]
      : []),
  ],
};

export const VACCINE_TYPES = [
  "live_attenuated",
  "inactivated",
  "subunit",
  "toxoid",
  "mrna",
  "viral_vector",
  "other",
] as const;

/** The UTC day of a timestamp with an offset. */
const utcDay = (t: unknown): string | null =>
  typeof t === "string" && !Number.isNaN(Date.parse(t))
    ? new Date(t).toISOString().slice(0, 10)
    : null;

const vaccinations: ChartKind = {
  name: "vaccinations",
  fields: z.strictObject({
    vaccineName: text(200),
    vaccineType: z.enum(VACCINE_TYPES),
    administeredAt: z.iso.datetime({ offset: true }),
    administeredById: z.uuid().nullable().optional(),
    batchNumber: optText(50),
    nextDueDate: date.nullable().optional(),
    requiredByLaw: z.boolean().nullable().optional(),
    certificateMediaId: z.uuid().nullable().optional(),
  }),
  check: (c, today) => {
    const day = utcDay(c.administeredAt);
    return [
      ...(day && day > today
        ? [{ path: "administeredAt", message: "must not be in the future" }]
        : []),
      ...(day && typeof c.nextDueDate === "string" && c.nextDueDate < day
        ? [{ path: "nextDueDate", message: "must not be before administeredAt" }]
        : []),
    ];
  },
  patientMayEnter: false,
  practitionerFields: ["administeredById"],
  mediaFields: ["certificateMediaId"],
  facets: (c) => ({
    clinicalDate: utcDay(c.administeredAt),
    critical: null,
    startDate: null,
    endDate: null,
    dueDate: typeof c.nextDueDate === "string" ? c.nextDueDate : null,
  }),
  query: z.object({
    dueWithinDays: DAYS.optional().openapi({
      description: "next dose due today or within this many days (UTC)",
    }),
  }),
  where: (q, today) =>
    q.dueWithinDays !== undefined
      ? [sql`and due_date between ${today}::date
          and ${addDays(today, Number(q.dueWithinDays))}::date`]
      : [],
};

export const KINDS: Readonly<Record<ChartKindName, ChartKind>> = {
  allergies,
  prescriptions,
  vaccinations,
};
