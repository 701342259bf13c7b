import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Clinics: a directory of care sites. Stream `clinic-<id>`. Clinic data is
 * not PHI, so nothing is sealed. The license number is claimed in its own
 * stream (`clinic-license-<digest>`, {@link ClinicLicenseClaimed}), as the MRN is.
 */
const clinicId = z.uuid();

const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, "HH:MM");
const interval = z.strictObject({ open: hhmm, close: hhmm }).refine(
  (i) => i.open < i.close,
  "open must be before close",
);
const day = z.array(interval).max(4);

/** Opening intervals per weekday; a missing or empty day is closed. */
export const OperatingHours = z.strictObject({
  mon: day.optional(),
  tue: day.optional(),
  wed: day.optional(),
  thu: day.optional(),
  fri: day.optional(),
  sat: day.optional(),
  sun: day.optional(),
});

export const ClinicAddress = z.strictObject({
  line1: z.string().min(1).max(200),
  line2: z.string().max(200).nullable(),
  city: z.string().min(1).max(100),
  state: z.string().max(100),
  zip: z.string().max(20),
});

/** Everything a clinic holds besides its id and active flag. */
export const ClinicDetails = z.strictObject({
  name: z.string().trim().min(1).max(200),
  licenseNumber: z.string().trim().min(1).max(64),
  address: ClinicAddress.nullable(),
  phone: z.string().max(40).nullable(),
  email: z.email().max(254).nullable(),
  operatingHours: OperatingHours,
  services: z.array(z.string().trim().min(1).max(80)).max(50),
});
export type ClinicDetails = z.infer<typeof ClinicDetails>;

export const ClinicRegistered = defineEvent({
  type: "ClinicRegistered",
  version: 1,
  schema: z.strictObject({ clinicId, ...ClinicDetails.shape }),
});

/** The fields that changed, with their new values. */
export const ClinicUpdated = defineEvent({
  type: "ClinicUpdated",
  version: 1,
  schema: z.strictObject({ clinicId, changes: ClinicDetails.partial() }),
});

export const ClinicDeactivated = defineEvent({
  type: "ClinicDeactivated",
  version: 1,
  schema: z.strictObject({ clinicId }),
});

export const ClinicReactivated = defineEvent({
  type: "ClinicReactivated",
  version: 1,
  schema: z.strictObject({ clinicId }),
});

/**
 * Claims a license number for a clinic. Stream `clinic-license-<digest of the
 * normalised license>`, appended with "no_stream": the first claim wins.
 */
export const ClinicLicenseClaimed = defineEvent({
  type: "ClinicLicenseClaimed",
  version: 1,
  schema: z.strictObject({ clinicId }),
});

export const clinicEvents = [
  ClinicRegistered,
  ClinicUpdated,
  ClinicDeactivated,
  ClinicReactivated,
  ClinicLicenseClaimed,
];

export const EMPLOYMENT_TYPES = ["full_time", "part_time", "visiting", "contractor"] as const;
export type EmploymentType = (typeof EMPLOYMENT_TYPES)[number];

/**
 * A practitioner joined the clinic (stream `clinic-<clinicId>`). Who added
 * them and when are the event's metadata and time.
 */
export const ClinicPractitionerAdded = defineEvent({
  type: "ClinicPractitionerAdded",
  version: 1,
  schema: z.strictObject({
    clinicId,
    userId: z.uuid(),
    employmentType: z.enum(EMPLOYMENT_TYPES),
  }),
});

/**
 * A membership changed: `active: false` is leaving the clinic (every use of
 * the clinic's grants ends at once), `true` rejoining; or a new employment type.
 */
export const ClinicPractitionerUpdated = defineEvent({
  type: "ClinicPractitionerUpdated",
  version: 1,
  schema: z.strictObject({
    clinicId,
    userId: z.uuid(),
    changes: z.strictObject({
      active: z.boolean().optional(),
      employmentType: z.enum(EMPLOYMENT_TYPES).optional(),
    }),
  }),
});

export const clinicMembershipEvents = [ClinicPractitionerAdded, ClinicPractitionerUpdated];

/**
 * A `clinic_owner` user was made an owner of the clinic (stream
 * `clinic-<clinicId>`): from now on they read the chart entries recorded at
 * it. Who made them one and when are the event's metadata and time.
 */
export const ClinicOwnerAdded = defineEvent({
  type: "ClinicOwnerAdded",
  version: 1,
  schema: z.strictObject({ clinicId, userId: z.uuid() }),
});

/** No longer an owner: their reads of the clinic's entries end at once. */
export const ClinicOwnerRemoved = defineEvent({
  type: "ClinicOwnerRemoved",
  version: 1,
  schema: z.strictObject({ clinicId, userId: z.uuid() }),
});

export const clinicOwnerEvents = [ClinicOwnerAdded, ClinicOwnerRemoved];
