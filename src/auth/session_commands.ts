import type { EventMetadata } from "../../events/metadata.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { type SessionCommand, sessionDecider } from "../domain/session.ts";
import type { EventStore } from "../store/event_store.ts";

export const sessionStream = (id: string) => `session-${id}`;

/** Runs a session command; a concurrent refresh or end is read and decided again. */
export const runSessionCommand = (
  store: EventStore,
  sessionId: string,
  cmd: SessionCommand,
  metadata: EventMetadata,
) =>
  handleCommand(store, sessionDecider, sessionStream(sessionId), cmd, {
    metadata,
    unseal: false,
    retry: true,
  });

/** Ends a session (an ended one stays as it is: nothing is appended). */
export const endSession = (
  store: EventStore,
  sessionId: string,
  reason: "logout" | "logout_all" | "user_deactivated",
  metadata: EventMetadata,
) => runSessionCommand(store, sessionId, { type: "EndSession", reason }, metadata);
