import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

/**
 * Practitioner profiles: a practitioner user's professional data. Stream
 * `practitioner-<userId>`, beside the account's `user-<userId>`: a profile
 * edit must not move the account's version (an admin's If-Match on the
 * account) nor the other way round. The profile is not PHI, but the bio is
 * the practitioner's own personal data: like the account's name it is sealed
 * under the user's key (`user-<userId>`), so erasing the user erases it.
 * The license number is claimed in its own stream
 * (`practitioner-license-<digest>`, {@link PractitionerLicenseClaimed}), as
 * the MRN and the clinic license are.
 */
const userId = z.uuid();

/** Everything a profile holds. */
export const PractitionerProfileFields = z.strictObject({
  licenseNumber: z.string().trim().min(1).max(64),
  specialization: z.string().trim().min(1).max(200).nullable(),
  yearsOfExperience: z.number().int().min(0).max(80).nullable(),
  qualifications: z.array(z.string().trim().min(1).max(200)).max(50),
  bio: z.string().trim().max(4000).nullable(),
});
export type PractitionerProfileFields = z.infer<typeof PractitionerProfileFields>;

const userPhi = <const F extends string>(fields: readonly F[]) => ({
  subject: (d: { userId: string }) => `user-${d.userId}`,
  fields,
});

/** A practitioner's profile was set for the first time: every field. */
export const PractitionerProfileSet = defineEvent({
  type: "PractitionerProfileSet",
  version: 1,
  schema: z.strictObject({ userId, ...PractitionerProfileFields.shape }),
  phi: userPhi(["bio"]),
});

/** The fields of a profile that changed, with their new values. */
export const PractitionerProfileUpdated = defineEvent({
  type: "PractitionerProfileUpdated",
  version: 1,
  schema: z.strictObject({ userId, ...PractitionerProfileFields.partial().shape }),
  phi: userPhi(["bio"]),
});

/**
 * Claims a practitioner license number. Stream `practitioner-license-<digest
 * of the normalised license>`, appended with "no_stream": the first claim wins.
 */
export const PractitionerLicenseClaimed = defineEvent({
  type: "PractitionerLicenseClaimed",
  version: 1,
  schema: z.strictObject({ userId }),
});

export const practitionerEvents = [
  PractitionerProfileSet,
  PractitionerProfileUpdated,
  PractitionerLicenseClaimed,
];
