import type { EventMetadata } from "../../events/metadata.ts";
import { handleCommand } from "../domain/command_handler.ts";
import {
  type CredentialCommand,
  credentialsDecider,
  type NewCredentialEvent,
} from "../domain/credentials.ts";
import type { EventStore } from "../store/event_store.ts";

export const authStream = (userId: string): string => `auth-${userId}`;

/**
 * Decides a credential check on the account's auth stream and appends the
 * result at the version it was decided on; another writer in between makes
 * it read and decide again, so concurrent attempts are each counted (and a
 * burst that never settles is refused, 503: fail closed). Returns the events
 * appended (none when the decision was to append nothing).
 */
export const runCredentialCommand = async (
  store: EventStore,
  cmd: CredentialCommand,
  metadata: EventMetadata,
): Promise<NewCredentialEvent[]> => {
  // only the types and reasons matter here: nothing sealed needs opening
  const r = await handleCommand(store, credentialsDecider, authStream(cmd.userId), cmd, {
    metadata,
    unseal: false,
    retry: true,
  });
  return r.events;
};
