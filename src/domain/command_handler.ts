import type { EventMetadata } from "../../events/metadata.ts";
import { ConcurrencyError, PreconditionFailedError, UnavailableError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import type { NewEvent } from "../store/types.ts";
import { type Decider, foldEvents } from "./decider.ts";

export interface HandleOptions {
  metadata?: EventMetadata;
  /** Open sealed PHI when reading (default true); a decider that reads no PHI passes false. */
  unseal?: boolean;
  /** The version the client last saw (If-Match): another one is a 412, and nothing is retried. */
  ifMatch?: number;
  /**
   * On a version conflict, read again and decide again, up to this many
   * attempts in all (true: {@link MAX_ATTEMPTS}). Only for commands whose
   * decision stays right on the newer state (a status change, an add).
   */
  retry?: boolean | number;
}

export interface HandleResult<S, N> {
  /** The stream's version after the command (unchanged when it decided nothing): the ETag. */
  version: number;
  /** What was appended (possibly nothing). */
  events: N[];
  /** The state after the appended events. */
  state: S;
}

/** Enough rounds for each of a burst of concurrent writers on one stream to win once. */
export const MAX_ATTEMPTS = 50;

const jitter = (attempt: number) =>
  new Promise((resolve) => setTimeout(resolve, Math.random() * Math.min(attempt, 10)));

/**
 * Runs one command against one stream: reads and folds it, checks If-Match,
 * decides, and appends at the version it decided on ("no_stream" for an
 * empty stream). A writer in between is a ConcurrencyError: with `retry`
 * (and no If-Match) the command is read and decided again; with If-Match it
 * is a 412, since the client's version is then stale.
 */
export const handleCommand = async <S, C, E, N extends E & NewEvent>(
  store: Pick<EventStore, "readStream" | "append">,
  decider: Decider<S, C, E, N>,
  streamId: string,
  command: C,
  opts: HandleOptions = {},
): Promise<HandleResult<S, N>> => {
  const attempts = opts.ifMatch !== undefined || !opts.retry
    ? 1
    : opts.retry === true
    ? MAX_ATTEMPTS
    : opts.retry;
  for (let attempt = 1;; attempt++) {
    const events = await store.readStream(streamId, { unseal: opts.unseal ?? true });
    const version = events.at(-1)?.streamVersion ?? 0;
    if (opts.ifMatch !== undefined && opts.ifMatch !== version) {
      throw new PreconditionFailedError(`the record is at version ${version}`);
    }
    const state = foldEvents(decider, events);
    const out = decider.decide(command, state);
    if (out.length === 0) return { version, events: out, state };
    try {
      const r = await store.append(
        streamId,
        version === 0 ? "no_stream" : version,
        out,
        opts.metadata,
      );
      return { version: r.version, events: out, state: out.reduce(decider.evolve, state) };
    } catch (err) {
      if (!(err instanceof ConcurrencyError)) throw err;
      if (opts.ifMatch !== undefined) {
        throw new PreconditionFailedError(`the record changed since version ${version}`);
      }
      if (attempts === 1) throw err;
      // fail closed: a command that could not be decided on a settled stream is refused
      if (attempt >= attempts) {
        throw new UnavailableError("the record is changing too fast; try again");
      }
      await jitter(attempt);
    }
  }
};
