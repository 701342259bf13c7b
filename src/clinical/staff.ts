import { z } from "zod";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";

// Users are staff (and patients' own accounts): their display names are not
// patient PHI, so the history and the media views may show them.

/** A user's display name, or null when there is no such user. */
export const userName = async (store: EventStore, id: string): Promise<string | null> => {
  const [r] = await store.db.query<{ name: string | null }>(
    sql`select name from users where id = ${id}::uuid`,
  );
  return r?.name ?? null;
};

/** Display names by user id, for the ids among these that are UUIDs of users. */
export const staffNames = async (
  store: EventStore,
  ids: readonly (string | undefined)[],
): Promise<Map<string, string>> => {
  const uuids = [...new Set(ids)].filter((x): x is string => !!x && z.uuid().safeParse(x).success);
  if (uuids.length === 0) return new Map();
  const rows = await store.db.query<{ id: string; name: string }>(
    sql`select id::text as id, name from users where id = any(${uuids}::uuid[])`,
  );
  return new Map(rows.map((r) => [r.id, r.name]));
};
