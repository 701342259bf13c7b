import { z } from "@hono/zod-openapi";
import type { ChartKindName } from "../../events/chart.ts";
import { LAB_STATUSES } from "../domain/chart.ts";
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
  /** Lab tests: the status, and whether any result is flagged abnormal. */
  status: string | null;
  abnormal: boolean | null;
}

const NO_FACETS: Facets = {
  clinicalDate: null,
  critical: null,
  startDate: null,
  endDate: null,
  dueDate: null,
  status: null,
  abnormal: null,
};

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
  /** A new entry's defaults, before validation (e.g. the author as the practitioner named). */
  defaults?: (c: Content, author: { id: string; role: string }) => Content;
  /** Rules on a new entry only (e.g. the status a lab test may start in). */
  createCheck?: (c: Content) => FieldIssue[];
  /** Fields an amendment may not change (they move through a route of their own). */
  fixed?: readonly string[];
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
    ...NO_FACETS,
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
  // a practitioner's prescription is theirs unless it names another prescriber;
  // home medication a patient enters names none
  defaults: (c, author) => authorAs("prescriberId")(c, author),
  mediaFields: [],
  facets: (c) => ({
    ...NO_FACETS,
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
  defaults: (c, author) => authorAs("administeredById")(c, author),
  mediaFields: ["certificateMediaId"],
  facets: (c) => ({
    ...NO_FACETS,
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

export const VISIT_TYPES = [
  "routine_checkup",
  "emergency",
  "surgery",
  "vaccination",
  "follow_up",
  "other",
] as const;

/** A practitioner author is the practitioner named in `field` unless another is. */
const authorAs = (field: string) => (c: Content, author: { id: string; role: string }) =>
  c[field] == null && author.role === "practitioner" ? { ...c, [field]: author.id } : c;

/** A measurement in a plausible range (units in the field's name or the docs). */
const measure = (min: number, max: number, int = false) =>
  (int ? z.number().int() : z.number()).min(min).max(max).nullable().optional();

const visits: ChartKind = {
  name: "visits",
  fields: z.strictObject({
    visitDate: date,
    practitionerId: z.uuid().nullable().optional(),
    visitType: z.enum(VISIT_TYPES),
    diagnosis: optText(2000),
    symptoms: optText(2000),
    treatmentPlan: optText(4000),
    clinicalNotes: optText(10_000),
    weightKg: measure(0.2, 700).openapi({ description: "kilograms, 0.2–700" }),
    temperatureC: measure(25, 45).openapi({ description: "degrees Celsius, 25–45" }),
    vitalSigns: z.strictObject({
      heartRate: measure(20, 300, true).openapi({ description: "beats per minute, 20–300" }),
      respiratoryRate: measure(2, 80, true).openapi({ description: "breaths per minute, 2–80" }),
      systolic: measure(40, 300, true).openapi({ description: "mmHg, 40–300" }),
      diastolic: measure(20, 200, true).openapi({ description: "mmHg, 20–200" }),
      spo2: measure(50, 100).openapi({ description: "percent, 50–100" }),
    }).nullable().optional(),
    followUp: z.strictObject({
      needed: z.boolean(),
      date: date.nullable().optional(),
      notes: optText(2000),
    }).nullable().optional(),
  }),
  check: (c, today) => {
    const issues: FieldIssue[] = [];
    const day = typeof c.visitDate === "string" ? c.visitDate : null;
    if (day && day > today) {
      issues.push({ path: "visitDate", message: "must not be in the future" });
    }
    const v = typeof c.vitalSigns === "object" && c.vitalSigns !== null
      ? c.vitalSigns as Record<string, unknown>
      : {};
    if (
      typeof v.systolic === "number" && typeof v.diastolic === "number" &&
      v.systolic <= v.diastolic
    ) {
      issues.push({ path: "vitalSigns.systolic", message: "must be above diastolic" });
    }
    const f = typeof c.followUp === "object" && c.followUp !== null
      ? c.followUp as Record<string, unknown>
      : {};
    if (f.needed === true && typeof f.date !== "string") {
      issues.push({ path: "followUp.date", message: "required when a follow-up is needed" });
    }
    if (day && typeof f.date === "string" && f.date < day) {
      issues.push({ path: "followUp.date", message: "must not be before visitDate" });
    }
    return issues;
  },
  patientMayEnter: false,
  practitionerFields: ["practitionerId"],
  mediaFields: [],
  defaults: authorAs("practitionerId"),
  facets: (c) => ({
    ...NO_FACETS,
    clinicalDate: typeof c.visitDate === "string" ? c.visitDate : null,
  }),
  query: z.object({}),
  where: () => [],
};

const STATUS_LIST = new RegExp(
  `^(?:${LAB_STATUSES.join("|")})(?:,(?:${LAB_STATUSES.join("|")}))*$`,
);

/** One structured result: `value` a number or text, `abnormal` the lab's flag. */
export const LabResult = z.strictObject({
  name: text(200),
  value: z.union([z.number(), text(200)]),
  unit: optText(40),
  referenceRange: optText(100),
  abnormal: z.boolean().nullable().optional(),
});

const labTests: ChartKind = {
  name: "lab-tests",
  fields: z.strictObject({
    testName: text(200),
    testType: optText(100),
    orderedById: z.uuid().nullable().optional(),
    status: z.enum(LAB_STATUSES),
    resultText: optText(20_000),
    results: z.array(LabResult).max(200).nullable().optional(),
    attachmentMediaId: z.uuid().nullable().optional(),
  }),
  check: () => [],
  // a test starts ordered (or, entered after the fact, in progress or completed)
  createCheck: (c) =>
    c.status === "cancelled"
      ? [{ path: "status", message: "a new lab test is ordered, in_progress or completed" }]
      : [],
  patientMayEnter: false,
  practitionerFields: ["orderedById"],
  mediaFields: ["attachmentMediaId"],
  defaults: (c, author) => authorAs("orderedById")({ status: "ordered", ...c }, author),
  // the status moves through PATCH only: the machine's rules hold
  fixed: ["status"],
  facets: (c) => ({
    ...NO_FACETS,
    status: typeof c.status === "string" ? c.status : null,
    abnormal: Array.isArray(c.results)
      ? c.results.some((r) => (r as Record<string, unknown>)?.abnormal === true)
      : false,
  }),
  query: z.object({
    status: z.string().regex(STATUS_LIST, `a comma list of ${LAB_STATUSES.join(", ")}`)
      .optional().openapi({ description: "any of these statuses, e.g. `ordered,in_progress`" }),
    abnormal: z.enum(["true", "false"]).optional().openapi({
      description: "true: any structured result flagged abnormal; false: none",
    }),
    acknowledged: z.enum(["true", "false"]).optional().openapi({
      description: "true: the ordering practitioner acknowledged the current result",
    }),
  }),
  where: (q) => [
    ...(q.status ? [sql`and status = any(${[...new Set(q.status.split(","))]}::text[])`] : []),
    ...(q.abnormal ? [sql`and abnormal = ${q.abnormal === "true"}`] : []),
    ...(q.acknowledged ? [sql`and acknowledged = ${q.acknowledged === "true"}`] : []),
  ],
};

export const KINDS: Readonly<Record<ChartKindName, ChartKind>> = {
  visits,
  prescriptions,
  "lab-tests": labTests,
  allergies,
  vaccinations,
};
