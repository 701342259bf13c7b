import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import {
  DASHBOARD_LIMIT,
  dashboardReads,
  GRANT_EXPIRY_HOURS,
  loadDashboard,
  VACCINATION_DUE_DAYS,
} from "../clinical/dashboard.ts";
import { auditRead } from "../clinical/patients.ts";
import { PendingRequest } from "./access.ts";
import { authenticate, authorize, requestMetadata } from "./auth_middleware.ts";
import type { AppEnv } from "./env.ts";
import { relationRule } from "./patient_scope.ts";
import { problemResponses } from "./problem.ts";
import { bearer, json } from "./route_kit.ts";

const PatientRef = z.object({
  id: z.uuid(),
  mrn: z.string().nullable(),
  firstName: z.string().nullable(),
  lastName: z.string().nullable(),
}).openapi("DashboardPatient");

const section = <T extends z.ZodType>(item: T, what: string) =>
  z.object({
    items: z.array(item).max(DASHBOARD_LIMIT).openapi({
      description: `${what}; at most ${DASHBOARD_LIMIT}`,
    }),
    total: z.number().int().openapi({ description: "how many there are in all" }),
  });

const Encounter = z.object({
  id: z.uuid(),
  patient: PatientRef,
  startsAt: z.string(),
  status: z.enum(["planned", "in_progress", "finished", "cancelled"]),
}).openapi("DashboardEncounter");

const DashboardSchema = z.object({
  patientCount: z.number().int().openapi({
    description: "the patients you may read now (care team, encounter, active grant)",
  }),
  recentlyViewed: section(
    z.object({
      patient: PatientRef,
      lastViewedAt: z.string(),
      views: z.number().int(),
    }),
    "patients whose record you opened (GET /v1/patients/:id), most recent first",
  ),
  encountersToday: section(
    Encounter,
    "your encounters starting today (UTC), any status but cancelled, earliest first",
  ),
  upcomingEncounters: section(
    Encounter,
    "your planned encounters starting after today (UTC), earliest first",
  ),
  recentUploads: section(
    z.object({
      id: z.uuid(),
      patient: PatientRef,
      encounterId: z.uuid(),
      kind: z.string(),
      category: z.string(),
      contentType: z.string(),
      uploaderId: z.uuid(),
      createdAt: z.string(),
    }),
    "photos and documents uploaded to your encounters (not deleted), newest first",
  ),
  pendingAccessRequests: section(
    PendingRequest,
    "your access requests still waiting for the patient's code, newest first (ids only)",
  ),
  expiringGrants: section(
    z.object({
      id: z.uuid(),
      patient: PatientRef,
      grantee: z.object({ kind: z.enum(["practitioner", "clinic"]), id: z.uuid() }),
      source: z.enum(["request", "share", "break_glass"]),
      expiresAt: z.string(),
    }),
    `grants you can use that end within ${GRANT_EXPIRY_HOURS} hours, soonest first`,
  ),
  abnormalResults: section(
    z.object({
      id: z.uuid().openapi({ description: "the lab test's chart entry" }),
      patient: PatientRef,
      encounterId: z.uuid().nullable(),
      testName: z.string().nullable(),
      abnormal: z.array(z.record(z.string(), z.unknown())).openapi({
        description: "the structured results flagged abnormal",
      }),
      updatedAt: z.string(),
    }),
    "completed lab tests you ordered with a result flagged abnormal that you have not " +
      "acknowledged, most recently changed first",
  ),
  vaccinationsDue: section(
    z.object({
      id: z.uuid().openapi({ description: "the vaccination's chart entry (the latest dose)" }),
      patient: PatientRef,
      vaccineName: z.string().nullable(),
      administeredAt: z.string().nullable(),
      nextDueDate: z.string(),
      overdue: z.boolean(),
    }),
    `per patient and vaccine, the latest dose whose nextDueDate is past or within ` +
      `${VACCINATION_DUE_DAYS} days (UTC), soonest first`,
  ),
}).openapi("Dashboard");

/** `GET /v1/dashboard`: a practitioner's working set (audited). */
export const dashboard = new OpenAPIHono<AppEnv>().openapi(
  createRoute({
    method: "get",
    path: "/",
    tags: ["dashboard"],
    summary: "The clinician dashboard (practitioner; audited)",
    description: "Only patients you may read (the rule of `GET /v1/patients`), never a " +
      "deleted or erased one. Every patient item is an audited read, recorded before the " +
      "answer like the single routes record them (`PatientsSearched`, `EncountersListed`, " +
      "`MediaListed`, `ChartEntriesListed`, `GrantsViewed`); if that cannot be written the " +
      "answer is 503. Recently viewed patients come from an async read model and may trail " +
      "your last reads by a moment.",
    security: bearer,
    middleware: [authenticate(), authorize("dashboard.read")] as const,
    responses: {
      200: { description: "the dashboard", content: json(DashboardSchema) },
      ...problemResponses("unauthorized", "forbidden", "unavailable"),
    },
  }),
  async (c) => {
    const runtime = c.var.deps.runtime();
    const actor = c.get("actor")!;
    const d = await loadDashboard(runtime.store, actor, relationRule(c));
    await auditRead(runtime, actor, dashboardReads(d), requestMetadata(c));
    c.header("Cache-Control", "no-store");
    return c.json(d, 200);
  },
);
