import { z } from "zod";
import type { EventMetadata } from "../../events/metadata.ts";
import { getUser } from "../auth/accounts.ts";
import { clinicDecider, type OwnerStanding } from "../domain/clinic.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { ValidationError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { timestamp } from "../timestamp.ts";
import { clinicStream } from "./clinics.ts";

/** An owner of a clinic, as the API shows it. */
export interface OwnerView {
  clinicId: string;
  userId: string;
  addedAt: string;
  /** Who made them an owner (the actor of `ClinicOwnerAdded`). */
  addedBy: string | null;
}

export const OwnerInput = z.strictObject({ userId: z.uuid() });

const parse = (input: unknown): { userId: string } => {
  const r = OwnerInput.safeParse(input);
  if (r.success) return r.data;
  throw new ValidationError(
    "invalid owner",
    r.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
  );
};

/** An unknown user is ineligible too: the issue asks for a 422 naming `userId`. */
const standingOf = async (store: EventStore, userId: string): Promise<OwnerStanding> => {
  const user = await getUser(store, userId);
  return user?.role === "clinic_owner" && user.active ? "eligible" : "ineligible";
};

/**
 * Makes a `clinic_owner` user an owner of the clinic. Idempotent: an owner
 * added again is no new event (`added: false`), so of concurrent adds of one
 * user exactly one appends and every caller gets the same owner back.
 */
export const addOwner = async (
  store: EventStore,
  clinicId: string,
  input: unknown,
  metadata: EventMetadata,
): Promise<{ userId: string; added: boolean }> => {
  const { userId } = parse(input);
  const r = await handleCommand(store, clinicDecider, clinicStream(clinicId), {
    type: "AddOwner",
    userId,
    standing: await standingOf(store, userId),
  }, { metadata, unseal: false, retry: true });
  return { userId, added: r.events.length > 0 };
};

/** Ends an ownership (404 when the user is not an owner): their chart reads end with it. */
export const removeOwner = async (
  store: EventStore,
  clinicId: string,
  userId: string,
  metadata: EventMetadata,
): Promise<void> => {
  await handleCommand(store, clinicDecider, clinicStream(clinicId), {
    type: "RemoveOwner",
    userId,
  }, { metadata, unseal: false, retry: true });
};

interface Row {
  clinic_id: string;
  user_id: string;
  added_at: Date | string;
  added_by: string | null;
}

const view = (r: Row): OwnerView => ({
  clinicId: r.clinic_id,
  userId: r.user_id,
  addedAt: timestamp(r.added_at),
  addedBy: r.added_by,
});

const COLUMNS = sql`clinic_id::text as clinic_id, user_id::text as user_id, added_at,
  added_by::text as added_by`;

/** One ownership (inline read model), or null. */
export const getOwner = async (
  store: EventStore,
  clinicId: string,
  userId: string,
): Promise<OwnerView | null> => {
  const [r] = await store.db.query<Row>(sql`select ${COLUMNS} from clinic_owners
    where clinic_id = ${clinicId}::uuid and user_id = ${userId}::uuid`);
  return r ? view(r) : null;
};

/** A clinic's owners in the order they were added: a handful per clinic, so one page. */
export const listOwners = async (store: EventStore, clinicId: string): Promise<OwnerView[]> =>
  (await store.db.query<Row>(sql`select ${COLUMNS} from clinic_owners
    where clinic_id = ${clinicId}::uuid order by added_at, user_id`)).map(view);
