import { ValidationError } from "../errors.ts";

/** An event as a stream holds it, before its type is known. */
export interface AnyEvent {
  readonly type: string;
  readonly data: unknown;
}

/**
 * An aggregate's rules as three pure functions over its stream: the state
 * before any event, how an event changes it, and which events a command
 * produces in a state (or a typed error). `E` is the union of the events it
 * folds, `N` of the events it decides (each also one it folds). `accepts`
 * picks its events out of a stream that may hold others (`auth-<userId>`
 * holds the credential and the MFA events).
 */
export interface Decider<S, C, E, N extends E = E> {
  readonly initialState: () => S;
  readonly accepts: <R extends AnyEvent>(e: R) => e is R & E;
  readonly evolve: (state: S, event: E) => S;
  readonly decide: (command: C, state: S) => N[];
}

/** Folds the decider's events of a stream (others are skipped). */
export const foldEvents = <S, E>(
  d: Pick<Decider<S, never, E, never>, "initialState" | "accepts" | "evolve">,
  events: readonly AnyEvent[],
): S => {
  let state = d.initialState();
  for (const e of events) if (d.accepts(e)) state = d.evolve(state, e);
  return state;
};

/** Fails to compile when a switch over a union misses a case. */
export const unreachable = (x: never, what: string): never => {
  throw new Error(`unhandled ${what}: ${JSON.stringify(x)}`);
};

/**
 * The reason a command must give (a delete, a planned encounter), trimmed;
 * blank is a 422 naming `reason`, whatever the state of the stream.
 */
export const requiredReason = (reason: string): string => {
  const r = reason.trim();
  if (!r) {
    throw new ValidationError("a reason is required", [{ path: "reason", message: "required" }]);
  }
  return r;
};
