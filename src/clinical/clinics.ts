import { createHash } from "node:crypto";
import { z } from "zod";
import { ClinicDetails, EMPLOYMENT_TYPES } from "../../events/clinic.ts";
import type { EventMetadata } from "../../events/metadata.ts";
import { getUser } from "../auth/accounts.ts";
import { type Clinic, clinicDecider, type PractitionerStanding } from "../domain/clinic.ts";
import { handleCommand } from "../domain/command_handler.ts";
import {
  ConcurrencyError,
  ConflictError,
  NotFoundError,
  PreconditionFailedError,
  ValidationError,
} from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";

export const clinicStream = (id: string) => `clinic-${id}`;

/** The license as it is compared: trimmed, case-insensitive. */
export const normalizeLicense = (license: string) => license.trim().toUpperCase();

/**
 * The license reservation stream: a digest of the normalised license (a
 * clinic license is not PHI; the digest only keeps stream ids short and plain).
 */
export const licenseStream = (license: string) =>
  `clinic-license-${createHash("sha256").update(normalizeLicense(license)).digest("hex")}`;

export interface ClinicView extends ClinicDetails {
  id: string;
  active: boolean;
  version: number;
}

const parse = <T>(schema: z.ZodType<T>, input: unknown): T => {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw new ValidationError(
    "invalid clinic",
    r.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
  );
};

/**
 * Claims a license for a clinic with "no_stream": of two concurrent claims
 * exactly one wins. A license the clinic itself holds is already its own.
 */
const claimLicense = async (
  store: EventStore,
  clinicId: string,
  license: string,
  metadata: EventMetadata,
) => {
  const stream = licenseStream(license);
  try {
    await store.append(stream, "no_stream", [{
      type: "ClinicLicenseClaimed",
      data: { clinicId },
    }], metadata);
  } catch (err) {
    if (!(err instanceof ConcurrencyError)) throw err;
    const holder = (await store.readStream(stream)).at(-1)?.data.clinicId;
    if (holder !== clinicId) throw new ConflictError("a clinic with that license exists");
  }
};

const view = (s: Clinic, version: number): ClinicView | null =>
  s.status === "none" ? null : { id: s.clinicId, active: s.active, version, ...s.details };

export const loadClinic = async (store: EventStore, id: string): Promise<ClinicView | null> => {
  const events = await store.readStream(clinicStream(id), { unseal: false });
  const state = events.reduce(
    (s, e) => clinicDecider.accepts(e) ? clinicDecider.evolve(s, e) : s,
    clinicDecider.initialState(),
  );
  return view(state, events.at(-1)?.streamVersion ?? 0);
};

/** Registers a clinic: validates, claims the license, then writes the clinic. */
export const registerClinic = async (
  store: EventStore,
  input: unknown,
  metadata: EventMetadata,
): Promise<ClinicView> => {
  const details = parse(ClinicDetails, input);
  const clinicId = crypto.randomUUID();
  await claimLicense(store, clinicId, details.licenseNumber, metadata);
  const r = await handleCommand(store, clinicDecider, clinicStream(clinicId), {
    type: "RegisterClinic",
    clinicId,
    details,
  }, { metadata, unseal: false });
  return view(r.state, r.version)!;
};

/** A PATCH: any detail, and `active` to deactivate or reactivate. */
export const ClinicPatch = ClinicDetails.partial().extend({ active: z.boolean().optional() });

/**
 * Changes a clinic (If-Match honoured; without it, a concurrent write to the
 * clinic's stream, such as a membership, is read and decided again). A new
 * license is claimed first; the old claim is kept, so a license once held
 * stays with its clinic (it may go back to it, no other clinic may take it up).
 */
export const updateClinic = async (
  store: EventStore,
  id: string,
  input: unknown,
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<ClinicView> => {
  const { active, ...changes } = parse(ClinicPatch, input);
  const current = await loadClinic(store, id);
  if (!current) throw new NotFoundError("no such clinic");
  // checked before the license is claimed, so a stale edit claims nothing
  if (ifMatch !== undefined && ifMatch !== current.version) {
    throw new PreconditionFailedError(`the record is at version ${current.version}`);
  }
  if (
    changes.licenseNumber !== undefined &&
    normalizeLicense(changes.licenseNumber) !== normalizeLicense(current.licenseNumber)
  ) {
    await claimLicense(store, id, changes.licenseNumber, metadata);
  }
  const r = await handleCommand(store, clinicDecider, clinicStream(id), {
    type: "UpdateClinic",
    changes,
    active,
  }, { metadata, unseal: false, ifMatch, retry: true });
  return view(r.state, r.version)!;
};

/** Who the membership command names, as the decider needs it (it reads nothing itself). */
const standingOf = async (store: EventStore, userId: string): Promise<PractitionerStanding> => {
  const user = await getUser(store, userId);
  if (!user) return "unknown";
  return user.role === "practitioner" && user.active ? "eligible" : "ineligible";
};

export const MembershipInput = z.strictObject({
  userId: z.uuid(),
  employmentType: z.enum(EMPLOYMENT_TYPES),
});

export const MembershipPatch = z.strictObject({
  active: z.boolean().optional(),
  employmentType: z.enum(EMPLOYMENT_TYPES).optional(),
});

/**
 * Adds a practitioner to a clinic, decided on the clinic's stream: of
 * concurrent adds of one practitioner exactly one appends, the others read
 * again and find them a member (409). Adds of different practitioners all
 * succeed, each decided on the state the last left.
 */
export const addPractitioner = async (
  store: EventStore,
  clinicId: string,
  input: unknown,
  metadata: EventMetadata,
): Promise<void> => {
  const { userId, employmentType } = parse(MembershipInput, input);
  await handleCommand(store, clinicDecider, clinicStream(clinicId), {
    type: "AddPractitioner",
    userId,
    employmentType,
    standing: await standingOf(store, userId),
  }, { metadata, unseal: false, retry: true });
};

/** Changes a membership: `active: false` is leaving, `true` rejoining; or the employment type. */
export const updateMembership = async (
  store: EventStore,
  clinicId: string,
  userId: string,
  input: unknown,
  metadata: EventMetadata,
): Promise<void> => {
  const changes = parse(MembershipPatch, input);
  await handleCommand(store, clinicDecider, clinicStream(clinicId), {
    type: "UpdatePractitioner",
    userId,
    changes,
    standing: await standingOf(store, userId),
  }, { metadata, unseal: false, retry: true });
};
