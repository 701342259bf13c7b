import { z } from "zod";
import { defineEvent } from "../src/store/catalog.ts";

export const ROLES = [
  "admin",
  "clinical_ops",
  "practitioner",
  "reception",
  "patient",
  "auditor",
  "analyst",
  // reads the chart entries recorded at the clinics they own, nothing else of the patient
  "clinic_owner",
] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;

const userId = z.uuid();
/** Personal data of the user and the password hash are sealed under the user's own key. */
const userPhi = <const F extends string>(fields: readonly F[]) => ({
  subject: (d: { userId: string }) => `user-${d.userId}`,
  fields,
});

/** A user account was created (by an admin or the bootstrap CLI). */
export const UserRegistered = defineEvent({
  type: "UserRegistered",
  version: 1,
  schema: z.strictObject({
    userId,
    email: z.string(),
    name: z.string(),
    role: Role,
    patientId: z.uuid().nullable(),
    passwordHash: z.string(),
    /** Self sign-up: the account waits for an admin's approval. */
    pending: z.boolean().optional(),
  }),
  phi: userPhi(["email", "name", "passwordHash"]),
});

/** An admin approved a self-registered (pending) account. */
export const UserApproved = defineEvent({
  type: "UserApproved",
  version: 1,
  schema: z.strictObject({ userId: z.uuid() }),
});

export const UserRoleChanged = defineEvent({
  type: "UserRoleChanged",
  version: 1,
  schema: z.strictObject({ userId, role: Role, patientId: z.uuid().nullable() }),
});

export const UserDeactivated = defineEvent({
  type: "UserDeactivated",
  version: 1,
  schema: z.strictObject({ userId }),
});

export const UserReactivated = defineEvent({
  type: "UserReactivated",
  version: 1,
  schema: z.strictObject({ userId }),
});

export const UserPasswordChanged = defineEvent({
  type: "UserPasswordChanged",
  version: 1,
  schema: z.strictObject({ userId, passwordHash: z.string() }),
  phi: userPhi(["passwordHash"]),
});

/** An operator set a new password (`deno task user reset-password`). */
export const UserPasswordReset = defineEvent({
  type: "UserPasswordReset",
  version: 1,
  schema: z.strictObject({
    userId,
    passwordHash: z.string(),
    operatorId: userId,
    reason: z.string().min(1).max(1000),
  }),
  phi: userPhi(["passwordHash", "reason"]),
});

export const UserProfileUpdated = defineEvent({
  type: "UserProfileUpdated",
  version: 1,
  schema: z.strictObject({
    userId,
    name: z.string().optional(),
    phone: z.string().nullable().optional(),
    specialization: z.string().nullable().optional(),
  }),
  phi: userPhi(["name", "phone", "specialization"]),
});

export const userEvents = [
  UserRegistered,
  UserApproved,
  UserRoleChanged,
  UserDeactivated,
  UserReactivated,
  UserPasswordChanged,
  UserPasswordReset,
  UserProfileUpdated,
] as const;
