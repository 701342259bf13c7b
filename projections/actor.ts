import type { EventMetadata } from "../events/metadata.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The acting user's id for a `uuid` column, or null when the actor is no
 * user (the CLI's "cli", a test's setup): a read model must never refuse an
 * event the log accepted.
 */
export const actorUserId = (metadata: EventMetadata): string | null =>
  metadata.actorId && UUID.test(metadata.actorId) ? metadata.actorId : null;
