/**
 * The analysts' views as the API serves them: `GET /v1/analytics/<route>`
 * reads `analytics.<view>` (made by projections/analytics_*.ts). The
 * README's table of views and columns follows this list.
 */
export interface AnalyticsColumn {
  /** As in the view (snake_case); the API names it in camelCase. */
  name: string;
  type: "date" | "text" | "integer" | "number" | "boolean";
  description: string;
}

export interface AnalyticsView {
  route: string;
  view: string;
  /** The column `from` and `to` filter (a day or an ISO week's Monday); null: a snapshot of now. */
  time: string | null;
  columns: readonly AnalyticsColumn[];
}

const c = (name: string, type: AnalyticsColumn["type"], description: string): AnalyticsColumn => ({
  name,
  type,
  description,
});

const day = c("day", "date", "the day (UTC)");
const weekStart = c("week_start", "date", "the Monday (UTC) that starts the ISO week");
const week = c("week", "text", "the ISO week, e.g. 2026-W49");
const count = (what: string) => c("count", "integer", what);
const patients = c("patients", "integer", "distinct patients behind the cell");
const suppressed = c(
  "suppressed",
  "boolean",
  "true: the cell is hidden (fewer than 5 patients, or its complement); its numbers read null",
);
const bytes = c("bytes", "integer", "bytes stored (after re-encoding)");
const kind = c("kind", "text", "photo or document");
const category = c("category", "text", "the upload category (unknown ones read `other`)");

export const ANALYTICS_VIEWS: readonly AnalyticsView[] = [
  {
    route: "uploads-daily",
    view: "uploads_daily",
    time: "day",
    columns: [day, category, kind, count("uploads"), bytes, patients, suppressed],
  },
  {
    route: "storage-by-category",
    view: "storage_by_category",
    time: null,
    columns: [
      category,
      kind,
      count("files stored (soft-deleted ones left out)"),
      bytes,
      patients,
      suppressed,
    ],
  },
  {
    route: "access-daily",
    view: "access_daily",
    time: "day",
    columns: [
      day,
      c("role", "text", "the actor's role"),
      c("action", "text", "the access event's type, e.g. PatientViewed"),
      count("access events"),
      patients,
      suppressed,
    ],
  },
  {
    route: "denials-daily",
    view: "denials_daily",
    time: "day",
    columns: [
      day,
      c("action", "text", "the policy action refused, e.g. patient.read"),
      count("denials"),
      c("patients", "integer", "distinct resources refused (each counted as a person)"),
      suppressed,
    ],
  },
  {
    route: "grants-weekly",
    view: "grants_weekly",
    time: "week_start",
    columns: [
      weekStart,
      week,
      c("event", "text", "opened, expired, revoked or break_glass (a break-glass use)"),
      count("events"),
      patients,
      suppressed,
    ],
  },
  {
    route: "patients-by-state-age",
    view: "patients_by_state_age",
    time: null,
    columns: [
      c("state", "text", "two-letter state code (other: not one; unknown: no address)"),
      c("age_band", "text", "age today (UTC) in 5-year bands: 0-4 … 85-89, then 90+"),
      count("patients (soft-deleted and erased ones left out)"),
      patients,
      suppressed,
    ],
  },
  {
    route: "encounters-weekly",
    view: "encounters_weekly",
    time: "week_start",
    columns: [
      weekStart,
      week,
      c("status", "text", "the encounter's current status"),
      count("encounters starting in the week"),
      patients,
      suppressed,
    ],
  },
  {
    route: "chart-weekly",
    view: "chart_weekly",
    time: "week_start",
    columns: [
      weekStart,
      week,
      c("kind", "text", "prescriptions or lab-tests"),
      c(
        "status",
        "text",
        "lab tests: current status (unknown once the patient is erased); prescriptions: recorded",
      ),
      count("entries recorded in the week (entered-in-error ones left out)"),
      c("abnormal", "integer", "lab tests with a result flagged abnormal"),
      c("abnormal_rate", "number", "abnormal / count (lab tests)"),
      patients,
      suppressed,
    ],
  },
];

/** snake_case to the API's camelCase. */
export const camel = (name: string): string =>
  name.replace(/_([a-z])/g, (_, ch) => ch.toUpperCase());
