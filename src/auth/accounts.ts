import type { EventMetadata } from "../../events/metadata.ts";
import type { Role } from "../../events/user.ts";
import { z } from "zod";
import { refusal } from "../domain/credentials.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { type UserCommand, userDecider } from "../domain/user.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { pgCode, pgConstraint } from "../store/db.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { runCredentialCommand } from "./credentials.ts";
import { hashPassword, passwordProblem, type ScryptParams, verifyPassword } from "./password.ts";
import { timestamp } from "../timestamp.ts";
import { readTogether } from "../store/snapshot.ts";

/** A user as the API shows it: never a secret. */
export interface UserView {
  id: string;
  email: string;
  name: string | null;
  role: Role;
  active: boolean;
  /** Self-registered, waiting for an admin's approval. */
  pending: boolean;
  patientId: string | null;
  phone: string | null;
  specialization: string | null;
  mfaEnabled: boolean;
  createdAt: string;
  updatedAt: string;
  version: number;
}

interface UserRow {
  id: string;
  email: string;
  name: string | null;
  role: Role;
  active: boolean;
  pending: boolean;
  patient_id: string | null;
  phone: string | null;
  specialization: string | null;
  mfa_enabled: boolean;
  created_at: Date | string;
  updated_at: Date | string;
  version: number;
}

const USER_COLUMNS = sql`id::text as id, email, name, role, active, pending,
  patient_id::text as patient_id,
  phone, specialization, mfa_enabled, created_at, updated_at, version`;

const view = (r: UserRow): UserView => ({
  id: r.id,
  email: r.email,
  name: r.name,
  role: r.role,
  active: r.active,
  pending: r.pending,
  patientId: r.patient_id,
  phone: r.phone,
  specialization: r.specialization,
  mfaEnabled: r.mfa_enabled,
  createdAt: timestamp(r.created_at),
  updatedAt: timestamp(r.updated_at),
  version: Number(r.version),
});

export const userStream = (id: string): string => `user-${id}`;

/** Runs user commands through the command handler (read, If-Match, decide, append at that version). */
export const handle = async (
  store: EventStore,
  userId: string,
  cmds: UserCommand[],
  metadata: EventMetadata,
  ifMatch?: number,
  /** Attempts in all when a concurrent write moves the stream on (default: no retry). */
  retry?: number,
): Promise<void> => {
  try {
    await handleCommand(store, userDecider, userStream(userId), cmds, {
      metadata,
      unseal: false,
      ...(ifMatch !== undefined ? { ifMatch } : {}),
      ...(retry !== undefined ? { retry } : {}),
    });
  } catch (err) {
    // the users projection's unique indexes: one account per email, one per patient
    if (pgCode(err) === "23505" && pgConstraint(err) === "users_patient_id_key") {
      throw new ConflictError("that patient record already has a user");
    }
    if (pgCode(err) === "23505" && pgConstraint(err) === "users_email_key") {
      throw new ConflictError("that email is already registered");
    }
    throw err;
  }
};

export interface RegisterInput {
  email: string;
  name: string;
  role: Role;
  password: string;
  patientId?: string | null;
  /** Self sign-up: inactive until an admin approves. */
  pending?: boolean;
}

/** Creates a user; returns its view. Email is compared case-insensitively. */
export const registerUser = async (
  store: EventStore,
  input: RegisterInput,
  metadata: EventMetadata,
  passwordParams: Readonly<ScryptParams>,
): Promise<UserView> => {
  const problem = passwordProblem(input.password);
  if (problem) throw new ValidationError("weak password", [{ path: "password", message: problem }]);
  const email = input.email.trim().toLowerCase();
  const [taken] = await store.db.query(sql`select 1 from users where email = ${email}`);
  if (taken) throw new ConflictError("that email is already registered");
  const userId = crypto.randomUUID();
  await handle(store, userId, [{
    type: "RegisterUser",
    userId,
    email,
    name: input.name,
    role: input.role,
    patientId: input.patientId ?? null,
    passwordHash: await hashPassword(input.password, passwordParams),
    ...(input.pending ? { pending: true } : {}),
  }], metadata);
  return (await getUser(store, userId))!;
};

const userIdByEmail = async (store: EventStore, email: string): Promise<string | null> => {
  const [r] = await store.db.query<{ id: string }>(
    sql`select id::text as id from users where email = ${email}`,
  );
  return r?.id ?? null;
};

/**
 * Self sign-up: a pending practitioner, or, for an email that already has an
 * account, nothing but a `SignupRefused` event. The caller cannot tell the
 * two apart (same answer, the same scrypt work), so sign-up does not reveal
 * who has an account.
 */
export const requestSignup = async (
  store: EventStore,
  input: { email: string; name: string; password: string },
  metadata: EventMetadata,
  passwordParams: Readonly<ScryptParams>,
): Promise<void> => {
  const problem = passwordProblem(input.password);
  if (problem) throw new ValidationError("weak password", [{ path: "password", message: problem }]);
  const email = input.email.trim().toLowerCase();
  let existing = await userIdByEmail(store, email);
  if (!existing) {
    try {
      await registerUser(
        store,
        { ...input, email, role: "practitioner", pending: true },
        metadata,
        passwordParams,
      );
      return;
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
      existing = await userIdByEmail(store, email); // a concurrent sign-up took the address
      if (!existing) throw err;
    }
  } else {
    await hashPassword(input.password, passwordParams); // the work a new account costs, thrown away
  }
  await store.append(`signup-${crypto.randomUUID()}`, "no_stream", [
    { type: "SignupRefused", data: { userId: existing, reason: "email_taken" } },
  ], metadata);
};

/** The account, or null when there is none or it was erased (its tombstone has no email). */
export const getUser = async (store: EventStore, id: string): Promise<UserView | null> => {
  const [r] = await store.db.query<UserRow>(
    sql`select ${USER_COLUMNS} from users where id = ${id}::uuid and erased_at is null`,
  );
  return r ? view(r) : null;
};

/** A users cursor: the last email of the previous page. */
const Position = z.object({ e: z.string().max(320) });

/** Users ordered by email; `cursor` holds the last email of the previous page. */
export const listUsers = async (
  store: EventStore,
  opts: { limit: number; cursor?: string; role?: Role },
): Promise<{ items: UserView[]; nextCursor: string | null; total: number }> => {
  const after = opts.cursor
    ? (await store.codec.cursors.decode("users", Position, opts.cursor)).e
    : null;
  // erased accounts are tombstones without an email: kept for their id, listed nowhere
  const roleFilter = opts.role
    ? sql`and erased_at is null and role = ${opts.role}`
    : sql`and erased_at is null`;
  const [rows, [c]] = await readTogether<UserRow, { n: number }>(
    store.db,
    sql`select ${USER_COLUMNS} from users
    where true ${roleFilter} ${after !== null ? sql`and email > ${after}` : sql``}
    order by email limit ${opts.limit + 1}`,
    sql`select count(*)::int as n from users where true ${roleFilter}`,
  );
  const page = rows.slice(0, opts.limit);
  return {
    items: page.map(view),
    nextCursor: rows.length > opts.limit
      ? await store.codec.cursors.encode("users", { e: page.at(-1)!.email })
      : null,
    total: Number(c?.n ?? 0),
  };
};

/** Admin changes: role (with patient link) and active flag, honouring If-Match. */
export const updateUser = async (
  store: EventStore,
  id: string,
  patch: { role?: Role; patientId?: string | null; active?: boolean },
  metadata: EventMetadata,
  ifMatch?: number,
): Promise<UserView> => {
  const current = await getUser(store, id);
  if (!current) throw new NotFoundError("no such user");
  const cmds: UserCommand[] = [];
  if (patch.role !== undefined || patch.patientId !== undefined) {
    const role = patch.role ?? current.role;
    const patientId = patch.patientId !== undefined
      ? patch.patientId
      : role === "patient"
      ? current.patientId
      : null;
    cmds.push({ type: "ChangeRole", role, patientId });
  }
  if (patch.active !== undefined) cmds.push({ type: "SetActive", active: patch.active });
  await handle(store, id, cmds, metadata, ifMatch);
  return (await getUser(store, id))!;
};

/** A user's own profile fields. */
export const updateProfile = async (
  store: EventStore,
  id: string,
  patch: { name?: string; phone?: string | null; specialization?: string | null },
  metadata: EventMetadata,
): Promise<UserView> => {
  await handle(store, id, [{ type: "UpdateProfile", ...patch }], metadata);
  return (await getUser(store, id))!;
};

/**
 * Changes the caller's password after checking the current one. A wrong
 * current password counts towards the account's lock like a wrong login
 * password (else a stolen access token is an unlimited password oracle), and
 * a locked account refuses even the right one, with the same answer. The
 * caller's other sessions are ended by the HTTP layer (a changed password
 * should log out every other device).
 */
export const changePassword = async (
  store: EventStore,
  id: string,
  current: string,
  next: string,
  now: Date,
  metadata: EventMetadata,
  passwordParams: Readonly<ScryptParams>,
): Promise<void> => {
  const [row] = await store.db.query<{ password_hash: string }>(
    sql`select password_hash from user_credentials where user_id = ${id}::uuid`,
  );
  const passwordOk = !!row && await verifyPassword(current, row.password_hash);
  const decided = await runCredentialCommand(
    store,
    { type: "CheckCurrentPassword", userId: id, now, passwordOk },
    metadata,
  );
  if (refusal(decided)) {
    throw new ValidationError("invalid credentials or account temporarily locked", [
      { path: "currentPassword", message: "does not match, or the account is temporarily locked" },
    ]);
  }
  const problem = passwordProblem(next);
  if (problem) {
    throw new ValidationError("weak password", [{ path: "newPassword", message: problem }]);
  }
  await handle(
    store,
    id,
    [{ type: "ChangePassword", passwordHash: await hashPassword(next, passwordParams) }],
    metadata,
  );
};
