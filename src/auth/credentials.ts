import type { EventMetadata } from "../../events/metadata.ts";
import { type CredentialCommand, decide, fold } from "../domain/credentials.ts";
import { ConcurrencyError, UnavailableError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import type { NewEvent } from "../store/types.ts";

export const authStream = (userId: string): string => `auth-${userId}`;

/**
 * Enough rounds for every one of a burst of concurrent attempts on one
 * account to get its turn: each round, one of them wins the append.
 */
const MAX_ATTEMPTS = 50;

const jitter = (attempt: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(attempt, 10)));

/**
 * Loads the account's auth stream, decides the command on it and appends
 * the result at the version it was decided on. Another writer in between is
 * a conflict: read again and decide again. Returns the events appended
 * (none when the decision was to append nothing).
 */
export const runCredentialCommand = async (
  store: EventStore,
  cmd: CredentialCommand,
  metadata: EventMetadata,
): Promise<NewEvent[]> => {
  const stream = authStream(cmd.userId);
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    // only the types and reasons matter here: nothing sealed needs opening
    const events = await store.readStream(stream, { unseal: false });
    const version = events.at(-1)?.streamVersion ?? 0;
    const out = decide(cmd, fold(events));
    if (out.length === 0) return out;
    try {
      await store.append(stream, version === 0 ? "no_stream" : version, out, metadata);
      return out;
    } catch (err) {
      if (!(err instanceof ConcurrencyError)) throw err;
      await jitter(attempt);
    }
  }
  // fail closed: an attempt that could not be counted is not let through
  throw new UnavailableError("too many concurrent attempts on this account; try again");
};
