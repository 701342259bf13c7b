import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * The clinical chart: one stream per entry, `chart-<entryId>`. Ids, the
 * kind and the patient-entered flag travel in clear; every piece of clinical
 * content (the entry's fields, an amendment's changes and reasons) is sealed
 * with the patient's key, so erasing the patient erases the chart.
 */
/** The kinds, named as their URL segment (`/chart/lab-tests`). */
export const CHART_KINDS = [
  "visits",
  "prescriptions",
  "lab-tests",
  "allergies",
  "vaccinations",
] as const;
export type ChartKindName = (typeof CHART_KINDS)[number];

const entryId = z.uuid();
const patientId = z.uuid();
const kind = z.enum(CHART_KINDS);
/** Who wrote a version, in which role. */
export const Author = z.strictObject({ id: z.uuid(), role: z.string() });
const sealed = { subject: (d: { patientId: string }) => `patient-${d.patientId}` };

export const ChartEntryRecorded = defineEvent({
  type: "ChartEntryRecorded",
  version: 1,
  schema: z.strictObject({
    entryId,
    patientId,
    kind,
    encounterId: z.uuid().nullable(),
    clinicId: z.uuid().nullable(),
    patientEntered: z.boolean(),
    createdBy: Author,
    content: z.record(z.string(), z.unknown()),
  }),
  phi: { ...sealed, fields: ["content"] },
});

/** A new version: `changes` are the fields replaced (null clears one). */
export const ChartEntryAmended = defineEvent({
  type: "ChartEntryAmended",
  version: 1,
  schema: z.strictObject({
    entryId,
    patientId,
    kind,
    amendedBy: Author,
    reason: z.string(),
    changes: z.record(z.string(), z.unknown()),
  }),
  phi: { ...sealed, fields: ["reason", "changes"] },
});

/** The entry was a mistake: it stays in the history, hidden from lists unless asked for. */
export const ChartEntryEnteredInError = defineEvent({
  type: "ChartEntryEnteredInError",
  version: 1,
  schema: z.strictObject({ entryId, patientId, kind, amendedBy: Author, reason: z.string() }),
  phi: { ...sealed, fields: ["reason"] },
});

/**
 * A lab test moved (ordered → in_progress → completed, or cancelled): a
 * version of its own, not an amendment, so the status machine is the
 * decider's and no amendment can skip a step. `changes` (sealed) holds the
 * new `status` and any `resultText`/`results` given with the move.
 */
export const LabTestStatusChanged = defineEvent({
  type: "LabTestStatusChanged",
  version: 1,
  schema: z.strictObject({
    entryId,
    patientId,
    kind: z.literal("lab-tests"),
    changedBy: Author,
    changes: z.record(z.string(), z.unknown()),
  }),
  phi: { ...sealed, fields: ["changes"] },
});

/** The ordering practitioner saw a completed test's result (no clinical content). */
export const LabResultAcknowledged = defineEvent({
  type: "LabResultAcknowledged",
  version: 1,
  schema: z.strictObject({
    entryId,
    patientId,
    kind: z.literal("lab-tests"),
    acknowledgedBy: Author,
  }),
});

/** A read of one entry (or its history). Stream `access-<actorId>`. */
export const ChartEntryViewed = defineEvent({
  type: "ChartEntryViewed",
  version: 1,
  schema: z.strictObject({ patientId, kind, entryId, history: z.boolean() }),
});

/** A read of a chart list (a patient's, or one encounter's): the ids returned. */
export const ChartEntriesListed = defineEvent({
  type: "ChartEntriesListed",
  version: 1,
  schema: z.strictObject({
    patientId,
    kind,
    encounterId: z.uuid().nullable(),
    entryIds: z.array(z.uuid()),
  }),
});

export const chartEvents = [
  ChartEntryRecorded,
  ChartEntryAmended,
  ChartEntryEnteredInError,
  LabTestStatusChanged,
  LabResultAcknowledged,
  ChartEntryViewed,
  ChartEntriesListed,
];
