import { type Role, userEvents } from "../../events/user.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, unreachable } from "./decider.ts";

/** A user as its own events describe it. */
export type User =
  | { status: "none" }
  | {
    status: "pending" | "active" | "inactive";
    userId: string;
    role: Role;
    patientId: string | null;
  };

export type UserCommand =
  | {
    type: "RegisterUser";
    userId: string;
    email: string;
    name: string;
    role: Role;
    patientId: string | null;
    passwordHash: string;
    pending?: boolean;
  }
  | { type: "ChangeRole"; role: Role; patientId: string | null }
  | { type: "SetActive"; active: boolean }
  | { type: "ChangePassword"; passwordHash: string }
  | { type: "ResetPassword"; passwordHash: string; operatorId: string; reason: string }
  | {
    type: "UpdateProfile";
    name?: string;
    phone?: string | null;
    specialization?: string | null;
  };

/**
 * Only a patient user is linked to a patient record, and to at most one: a
 * patient user without one is a family member, who sees nothing until a
 * patient (or an admin) makes them a proxy.
 */
const checkPatientLink = (role: Role, patientId: string | null): void => {
  if (role !== "patient" && patientId) {
    throw new ValidationError("only a patient user is linked to a patient record", [
      { path: "patientId", message: "allowed only for role patient" },
    ]);
  }
};

type UserDefs = (typeof userEvents)[number];
const isUserEvent = eventsOf(...userEvents);
export type UserEvent = EventOf<UserDefs>;
export type NewUserEvent = NewEventOf<UserDefs>;

const initialState = (): User => ({ status: "none" });

export const evolve = (s: User, e: UserEvent): User => {
  switch (e.type) {
    case "UserRegistered":
      return {
        status: e.data.pending ? "pending" : "active",
        userId: e.data.userId,
        role: e.data.role,
        patientId: e.data.patientId,
      };
    case "UserRoleChanged":
      return s.status === "none" ? s : { ...s, role: e.data.role, patientId: e.data.patientId };
    case "UserDeactivated":
      return s.status === "none" ? s : { ...s, status: "inactive" };
    case "UserReactivated":
    case "UserApproved":
      return s.status === "none" ? s : { ...s, status: "active" };
    case "UserPasswordChanged":
    case "UserPasswordReset":
    case "UserProfileUpdated":
      return s;
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): User =>
  foldEvents({ initialState, accepts: isUserEvent, evolve }, events);

/** Decides several commands in turn, each on the state the previous ones left. */
export const decideAll = (cmds: readonly UserCommand[], state: User): NewUserEvent[] => {
  const out: NewUserEvent[] = [];
  let s = state;
  for (const cmd of cmds) {
    for (const e of decide(cmd, s)) {
      s = evolve(s, e);
      out.push(e);
    }
  }
  return out;
};

/** Decides the events a command produces; pure (ids and hashes come in the command). */
export const decide = (cmd: UserCommand, s: User): NewUserEvent[] => {
  if (cmd.type === "RegisterUser") {
    if (s.status !== "none") throw new ConflictError("user exists");
    checkPatientLink(cmd.role, cmd.patientId);
    const { type: _t, ...data } = cmd;
    return [{ type: "UserRegistered", data }];
  }
  if (s.status === "none") throw new NotFoundError("no such user");
  const userId = s.userId;
  switch (cmd.type) {
    case "ChangeRole":
      checkPatientLink(cmd.role, cmd.patientId);
      if (cmd.role === s.role && cmd.patientId === s.patientId) return [];
      return [{
        type: "UserRoleChanged",
        data: { userId, role: cmd.role, patientId: cmd.patientId },
      }];
    case "SetActive":
      if (cmd.active === (s.status === "active")) return [];
      // activating a self-registered account is its approval
      if (cmd.active && s.status === "pending") return [{ type: "UserApproved", data: { userId } }];
      return [{ type: cmd.active ? "UserReactivated" : "UserDeactivated", data: { userId } }];
    case "ChangePassword":
      return [{ type: "UserPasswordChanged", data: { userId, passwordHash: cmd.passwordHash } }];
    case "ResetPassword":
      return [{
        type: "UserPasswordReset",
        data: {
          userId,
          passwordHash: cmd.passwordHash,
          operatorId: cmd.operatorId,
          reason: cmd.reason,
        },
      }];
    case "UpdateProfile": {
      const { type: _t, ...fields } = cmd;
      if (Object.keys(fields).length === 0) return [];
      return [{ type: "UserProfileUpdated", data: { userId, ...fields } }];
    }
    default:
      return unreachable(cmd, "command");
  }
};

/** The user decider takes a batch of commands (an admin's PATCH), decided in turn. */
export const userDecider: Decider<User, readonly UserCommand[], UserEvent, NewUserEvent> = {
  initialState,
  accepts: isUserEvent,
  evolve,
  decide: decideAll,
};
