import { ProxyAdded, type ProxyLevel, ProxyRemoved } from "../../events/proxy.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type Decider, foldEvents, unreachable } from "./decider.ts";
import type { AnyEvent } from "./decider.ts";

/** One family member acting for the patient: the relation's id and its level. */
export interface ProxyEntry {
  proxyId: string;
  level: ProxyLevel;
}

/** A patient's proxies (stream `proxies-<patientId>`), by the proxy user's id. */
export type Proxies = ReadonlyMap<string, ProxyEntry>;

export type ProxyCommand =
  | {
    type: "AddProxy";
    patientId: string;
    userId: string;
    level: ProxyLevel;
    /** A fresh id for the relation, minted by the caller (deciders draw no randomness). */
    proxyId: string;
  }
  | { type: "RemoveProxy"; patientId: string; userId: string };

const isProxyEvent = eventsOf(ProxyAdded, ProxyRemoved);
export type ProxyEvent = EventOf<typeof ProxyAdded | typeof ProxyRemoved>;
export type NewProxyEvent = NewEventOf<typeof ProxyAdded | typeof ProxyRemoved>;

const initialState = (): Proxies => new Map();

export const evolve = (s: Proxies, e: ProxyEvent): Proxies => {
  const next = new Map(s);
  switch (e.type) {
    case "ProxyAdded":
      next.set(e.data.userId, { proxyId: e.data.proxyId, level: e.data.level });
      return next;
    case "ProxyRemoved":
      next.delete(e.data.userId);
      return next;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Proxies =>
  foldEvents({ initialState, accepts: isProxyEvent, evolve }, events);

/**
 * Pure. Adding a proxy at the level they already hold is a conflict (409);
 * at another level it is a change of level, written as the old relation's
 * end and the new one's start in one append, so the old `proxyId` (which
 * events written through it carry) never names the new level. Removing a
 * user who is no proxy is a 404.
 */
export const decide = (cmd: ProxyCommand, s: Proxies): NewProxyEvent[] => {
  const current = s.get(cmd.userId);
  const { patientId, userId } = cmd;
  switch (cmd.type) {
    case "AddProxy": {
      if (current?.level === cmd.level) {
        throw new ConflictError(`that user is already a ${cmd.level} proxy of this patient`);
      }
      const added: NewProxyEvent = {
        type: "ProxyAdded",
        data: { proxyId: cmd.proxyId, patientId, userId, level: cmd.level },
      };
      return current
        ? [{ type: "ProxyRemoved", data: { proxyId: current.proxyId, patientId, userId } }, added]
        : [added];
    }
    case "RemoveProxy":
      if (!current) throw new NotFoundError("that user is no proxy of this patient");
      return [{ type: "ProxyRemoved", data: { proxyId: current.proxyId, patientId, userId } }];
    default:
      return unreachable(cmd, "command");
  }
};

export const proxyDecider: Decider<Proxies, ProxyCommand, ProxyEvent, NewProxyEvent> = {
  initialState,
  accepts: isProxyEvent,
  evolve,
  decide,
};
