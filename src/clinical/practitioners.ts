import { createHash } from "node:crypto";
import { PractitionerProfileFields } from "../../events/practitioner.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import { getUser } from "../auth/accounts.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { practitionerDecider } from "../domain/practitioner.ts";
import {
  ConcurrencyError,
  ConflictError,
  NotFoundError,
  PreconditionFailedError,
  ValidationError,
} from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";

export const practitionerStream = (userId: string) => `practitioner-${userId}`;

/** The license as it is compared: trimmed, case-insensitive. */
const normalizeLicense = (license: string) => license.trim().toUpperCase();

/** The license reservation stream: a digest of the normalised license (not PHI; short ids). */
export const practitionerLicenseStream = (license: string) =>
  `practitioner-license-${createHash("sha256").update(normalizeLicense(license)).digest("hex")}`;

/** A profile as the API shows it. */
export interface ProfileView extends PractitionerProfileFields {
  userId: string;
  createdAt: string;
  updatedAt: string;
  version: number;
}

interface Row {
  user_id: string;
  license_number: string;
  specialization: string | null;
  years_of_experience: number | null;
  qualifications: string[];
  bio: string | null;
  version: number;
  created_at: Date | string;
  updated_at: Date | string;
}

/** The user, when it is an account (not erased) with the practitioner role. */
const isPractitioner = async (store: EventStore, userId: string) =>
  (await getUser(store, userId))?.role === "practitioner";

/**
 * The profile of a practitioner, or null: no such user, not a practitioner
 * (any more), or no profile set yet.
 */
export const getProfile = async (
  store: EventStore,
  userId: string,
): Promise<ProfileView | null> => {
  if (!(await isPractitioner(store, userId))) return null;
  const [r] = await store.db.query<Row>(sql`select user_id::text as user_id, license_number,
      specialization, years_of_experience, qualifications, bio, version, created_at, updated_at
    from practitioner_profiles where user_id = ${userId}::uuid`);
  if (!r) return null;
  return {
    userId: r.user_id,
    licenseNumber: r.license_number,
    specialization: r.specialization,
    yearsOfExperience: r.years_of_experience === null ? null : Number(r.years_of_experience),
    qualifications: r.qualifications,
    bio: r.bio,
    createdAt: timestamp(r.created_at),
    updatedAt: timestamp(r.updated_at),
    version: Number(r.version),
  };
};

/**
 * Claims a license for a practitioner with "no_stream": of concurrent claims
 * exactly one wins. A license the practitioner already holds is theirs.
 */
const claimLicense = async (
  store: EventStore,
  userId: string,
  license: string,
  metadata: EventMetadata,
) => {
  const stream = practitionerLicenseStream(license);
  try {
    await store.append(stream, "no_stream", [{
      type: "PractitionerLicenseClaimed",
      data: { userId },
    }], metadata);
  } catch (err) {
    if (!(err instanceof ConcurrencyError)) throw err;
    const holder = (await store.readStream(stream)).at(-1)?.data.userId;
    if (holder !== userId) throw new ConflictError("a practitioner with that license exists");
  }
};

const ProfilePatch = PractitionerProfileFields.partial();

/**
 * Sets or changes a practitioner's profile (If-Match honoured). The first
 * time it needs a license number. A new license is claimed before the
 * profile is written; a practitioner keeps the licenses they held (no one
 * else may take them up).
 */
export const setProfile = async (
  store: EventStore,
  userId: string,
  input: unknown,
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<ProfileView> => {
  const parsed = ProfilePatch.safeParse(input);
  if (!parsed.success) {
    throw new ValidationError(
      "invalid profile",
      parsed.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    );
  }
  const changes = parsed.data;
  if (!(await isPractitioner(store, userId))) throw new NotFoundError("no such practitioner");
  const stream = practitionerStream(userId);
  const current = await store.readStream(stream, { unseal: false });
  const version = current.at(-1)?.streamVersion ?? 0;
  // checked before the license is claimed, so a stale edit claims nothing
  if (ifMatch !== undefined && ifMatch !== version) {
    throw new PreconditionFailedError(`the record is at version ${version}`);
  }
  const held = current.length > 0 ? (await getProfile(store, userId))?.licenseNumber ?? null : null;
  if (
    changes.licenseNumber !== undefined &&
    (held === null || normalizeLicense(changes.licenseNumber) !== normalizeLicense(held))
  ) {
    await claimLicense(store, userId, changes.licenseNumber, metadata);
  }
  await handleCommand(store, practitionerDecider, stream, {
    type: "SetProfile",
    userId,
    isPractitioner: true,
    changes,
  }, { metadata, ifMatch, retry: true });
  return (await getProfile(store, userId))!;
};
