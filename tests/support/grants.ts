import type { EventStore } from "../../src/store/event_store.ts";

/**
 * Grants, clinics and proxies made straight through the store, as the
 * helpers that own their routes (access codes, clinics, proxies) would
 * append them: tests of grants need them without those routes.
 */
// the membership and proxy read models keep who added them, as a uuid
const SETUP = { actorId: "00000000-0000-4000-8000-000000000001", actorRole: "admin" };
const digest = "0".repeat(64);

/**
 * A grant from a verified access request: AccessRequested,
 * AccessCodeVerified and AccessGranted, one append on `access-request-<id>`.
 */
export const appendGrant = async (
  store: EventStore,
  g: {
    patientId: string;
    granteeKind?: "practitioner" | "clinic";
    granteeId: string;
    practitionerId?: string;
    hours: number;
    now: Date;
    purpose?: string;
  },
): Promise<string> => {
  const requestId = crypto.randomUUID();
  const grantId = crypto.randomUUID();
  const kind = g.granteeKind ?? "practitioner";
  const practitionerId = g.practitionerId ?? g.granteeId;
  const purpose = g.purpose ?? "follow-up of the knee surgery";
  await store.append(`access-request-${requestId}`, "no_stream", [
    {
      type: "AccessRequested",
      data: {
        requestId,
        patientId: g.patientId,
        practitionerId,
        clinicId: kind === "clinic" ? g.granteeId : null,
        purpose,
        durationHours: g.hours,
        codeDigest: digest,
        code: "123456",
        expiresAt: new Date(g.now.getTime() + 600_000).toISOString(),
      },
    },
    { type: "AccessCodeVerified", data: { requestId, patientId: g.patientId, grantId } },
    {
      type: "AccessGranted",
      data: {
        grantId,
        patientId: g.patientId,
        granteeKind: kind,
        granteeId: g.granteeId,
        source: "request",
        sourceId: requestId,
        purpose,
        expiresAt: new Date(g.now.getTime() + g.hours * 3_600_000).toISOString(),
      },
    },
  ], { actorId: practitionerId, actorRole: "practitioner" });
  return grantId;
};

/** An active clinic with these active members. */
export const appendClinic = async (store: EventStore, members: string[]): Promise<string> => {
  const clinicId = crypto.randomUUID();
  await store.append(`clinic-${clinicId}`, "no_stream", [
    {
      type: "ClinicRegistered",
      data: {
        clinicId,
        name: "Riverside Clinic",
        licenseNumber: `LIC-${clinicId.slice(0, 8)}`,
        address: null,
        phone: null,
        email: null,
        operatingHours: {},
        services: [],
      },
    },
    ...members.map((userId) => ({
      type: "ClinicPractitionerAdded",
      data: { clinicId, userId, employmentType: "part_time" },
    })),
  ], SETUP);
  return clinicId;
};

/** A member leaves the clinic (`active: false`). */
export const leaveClinic = (store: EventStore, clinicId: string, userId: string) =>
  store.append(`clinic-${clinicId}`, "any", [{
    type: "ClinicPractitionerUpdated",
    data: { clinicId, userId, changes: { active: false } },
  }], SETUP);

export const deactivateClinic = (store: EventStore, clinicId: string) =>
  store.append(`clinic-${clinicId}`, "any", [{
    type: "ClinicDeactivated",
    data: { clinicId },
  }], SETUP);

/** A family proxy of the patient; returns the proxy relation's id. */
export const appendProxy = async (
  store: EventStore,
  patientId: string,
  userId: string,
  level: "full" | "read_only",
): Promise<string> => {
  const proxyId = crypto.randomUUID();
  await store.append(`proxies-${patientId}`, "any", [{
    type: "ProxyAdded",
    data: { proxyId, patientId, userId, level },
  }], SETUP);
  return proxyId;
};
