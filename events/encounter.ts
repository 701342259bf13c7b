import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Clinical encounters (visits) that photos and documents attach to. Stream
 * `encounter-<id>`. The reason for the visit is PHI, sealed with the
 * patient's key.
 */
const encounterId = z.uuid();
const patientId = z.uuid();

export const ENCOUNTER_STATUSES = ["planned", "in_progress", "finished", "cancelled"] as const;

export const EncounterPlanned = defineEvent({
  type: "EncounterPlanned",
  version: 1,
  schema: z.strictObject({
    encounterId,
    patientId,
    practitionerId: z.uuid(),
    startsAt: z.iso.datetime({ offset: true }),
    reason: z.string(),
  }),
  phi: { subject: (d) => `patient-${d.patientId}`, fields: ["reason"] },
});

export const EncounterStatusChanged = defineEvent({
  type: "EncounterStatusChanged",
  version: 1,
  schema: z.strictObject({
    encounterId,
    patientId,
    from: z.enum(ENCOUNTER_STATUSES),
    to: z.enum(ENCOUNTER_STATUSES),
  }),
});

/** A read of one encounter. Stream `access-<actorId>`. */
export const EncounterViewed = defineEvent({
  type: "EncounterViewed",
  version: 1,
  schema: z.strictObject({ encounterId, patientId }),
});

/** A read of a patient's encounter list: the ids returned. */
export const EncountersListed = defineEvent({
  type: "EncountersListed",
  version: 1,
  schema: z.strictObject({ patientId, encounterIds: z.array(z.uuid()) }),
});

export const encounterEvents = [
  EncounterPlanned,
  EncounterStatusChanged,
  EncounterViewed,
  EncountersListed,
];
