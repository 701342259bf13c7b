import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { ANALYTICS_VIEWS, type AnalyticsView, camel } from "../analytics/catalog.ts";
import type { FieldIssue } from "../errors.ts";
import { ANALYTICS_SCHEMA } from "../store/roles.ts";
import { ident, sql } from "../store/sql.ts";
import { authenticate, authorize } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { problem, problemResponses } from "./problem.ts";
import { bearer } from "./route_kit.ts";

const NAMES = ANALYTICS_VIEWS.map((v) => v.route);
const DAY = /^\d{4}-\d{2}-\d{2}$/;

const isDay = (s: string): boolean => {
  if (!DAY.test(s)) return false;
  const d = new Date(`${s}T00:00:00Z`);
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s;
};

type Cell = string | number | boolean | null;
type Row = Record<string, Cell>;

/** The query, checked here so that a bad one is a 400 naming each bad parameter. */
const parseQuery = (
  q: { from?: string; to?: string; format?: string },
): { from: string | null; to: string | null; format: "json" | "csv" } | FieldIssue[] => {
  const errors: FieldIssue[] = [];
  for (const k of ["from", "to"] as const) {
    const v = q[k];
    if (v !== undefined && !isDay(v)) {
      errors.push({ path: k, message: "a date, YYYY-MM-DD" });
    }
  }
  if (q.format !== undefined && q.format !== "json" && q.format !== "csv") {
    errors.push({ path: "format", message: "json or csv" });
  }
  if (errors.length === 0 && q.from && q.to && q.from > q.to) {
    errors.push({ path: "from", message: "after `to`" });
  }
  if (errors.length > 0) return errors;
  return { from: q.from ?? null, to: q.to ?? null, format: q.format === "csv" ? "csv" : "json" };
};

/** A cell as the API sends it: days as `YYYY-MM-DD`, bigints and numerics as numbers. */
const cellOf = (type: string, v: unknown): Cell => {
  if (v === null || v === undefined) return null;
  if (type === "date") {
    return v instanceof Date ? v.toISOString().slice(0, 10) : String(v).slice(0, 10);
  }
  if (type === "integer" || type === "number") return Number(v);
  if (type === "boolean") return v === true || v === "t" || v === "true";
  return String(v);
};

/** The order of a band label (`0-4`, …, `90+`) is its first number. */
const sortKey = (v: Cell): string | number =>
  typeof v === "string" && /^\d+(-\d+|\+)$/.test(v) ? parseInt(v, 10) : String(v ?? "");

const compareRows = (keys: readonly string[]) => (a: Row, b: Row): number => {
  for (const k of keys) {
    const x = sortKey(a[k] ?? null), y = sortKey(b[k] ?? null);
    if (x < y) return -1;
    if (x > y) return 1;
  }
  return 0;
};

const csvField = (v: Cell): string => {
  if (v === null) return "";
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
};

/** RFC 4180 text: a header of the JSON names, a suppressed cell's numbers empty. */
const toCsv = (columns: readonly string[], rows: readonly Row[]): string =>
  [columns, ...rows.map((r) => columns.map((c) => r[c] ?? null))]
    .map((line) => line.map((v) => csvField(v as Cell)).join(",")).join("\r\n") + "\r\n";

const readView = async (
  c: { var: AppEnv["Variables"] },
  v: AnalyticsView,
  from: string | null,
  to: string | null,
): Promise<Row[]> => {
  const view = ident(`${ANALYTICS_SCHEMA}.${v.view}`);
  const time = v.time ? ident(v.time) : null;
  const rows = await c.var.deps.runtime().store.db.query<Record<string, unknown>>(
    sql`select * from ${view} where true
      ${time && from ? sql`and ${time} >= ${from}::date` : sql``}
      ${time && to ? sql`and ${time} <= ${to}::date` : sql``}`,
  );
  const keys = v.columns.filter((col) => !["count", "suppressed"].includes(col.name))
    .filter((col) => col.type === "date" || col.type === "text").map((col) => camel(col.name));
  return rows.map((r) =>
    Object.fromEntries(v.columns.map((col) => [camel(col.name), cellOf(col.type, r[col.name])]))
  ).sort(compareRows(keys));
};

const Cell = z.union([z.string(), z.number(), z.boolean(), z.null()]);

const AnalyticsPage = z.object({
  items: z.array(z.record(z.string(), Cell)).openapi({
    description: "one cell per item, columns as the README lists them for the view; a " +
      'suppressed cell reads `"count": null, "suppressed": true` (its other numbers null too)',
  }),
  suppressedCells: z.number().int().openapi({ description: "how many items are suppressed" }),
}).openapi("AnalyticsPage");

/** De-identified aggregates for analysts, mounted under `/v1/analytics`. */
export const analytics = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get",
    path: "/{name}",
    tags: ["analytics"],
    summary: "A de-identified analytics view (HIPAA Safe Harbor; small cells suppressed)",
    description: "Reads `analytics.<view>` (the name with `_` for `-`). No names, contact " +
      "data, free text, identifiers or birth dates; ages in 5-year bands (90+ as one); days " +
      "in UTC and ISO weeks. A cell of fewer than 5 distinct patients is suppressed, and " +
      "when it is its group's only one, the group's next smallest cell too (see the README).",
    security: bearer,
    middleware: [authenticate(), authorize("analytics.read")] as const,
    request: {
      params: z.object({
        name: z.string().openapi({ param: { name: "name", in: "path" }, enum: NAMES }),
      }),
      query: z.object({
        from: z.string().optional().openapi({
          description: "first day (YYYY-MM-DD, UTC) or the week containing it; weekly views " +
            "compare the week's Monday; snapshot views ignore it",
          example: "2026-11-01",
        }),
        to: z.string().optional().openapi({ description: "last day, inclusive (YYYY-MM-DD)" }),
        format: z.string().optional().openapi({
          description: "json (default) or csv (text/csv, a header row; suppressed numbers empty)",
          enum: ["json", "csv"],
        }),
      }),
    },
    responses: {
      200: {
        description: "the view's cells",
        content: {
          "application/json": { schema: AnalyticsPage },
          "text/csv": { schema: z.string() },
        },
      },
      ...problemResponses("malformed-request", "unauthorized", "forbidden", "not-found"),
    },
  }),
  async (c) => {
    const v = ANALYTICS_VIEWS.find((x) => x.route === c.req.valid("param").name);
    if (!v) return problem(c, "not-found", `no analytics view of that name (${NAMES.join(", ")})`);
    const q = parseQuery(c.req.valid("query"));
    if (Array.isArray(q)) {
      return problem(c, "malformed-request", "bad query parameters", { errors: q });
    }
    const from = q.from && v.time === "week_start" ? weekOf(q.from) : q.from;
    const items = await readView(c, v, from, q.to);
    c.header("Cache-Control", "no-store");
    if (q.format === "csv") {
      c.header("Content-Type", "text/csv; charset=utf-8");
      c.header("Content-Disposition", `attachment; filename="${v.route}.csv"`);
      return c.body(toCsv(v.columns.map((col) => camel(col.name)), items), 200);
    }
    return c.json(
      { items, suppressedCells: items.filter((i) => i.suppressed === true).length },
      200,
    );
  },
);

/** The Monday of the ISO week holding a day: `from` in a week's middle takes that week. */
const weekOf = (day: string): string => {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
  return d.toISOString().slice(0, 10);
};
