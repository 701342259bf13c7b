import type { Role } from "../../events/user.ts";
import { ConflictError, NotFoundError, ValidationError } from "../errors.ts";
import type { NewEvent, StoredEvent } from "../store/types.ts";

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

const assertNever = (x: never): never => {
  throw new Error(`unhandled command ${JSON.stringify(x)}`);
};

/** A patient user is linked to exactly one patient record; nobody else is. */
const checkPatientLink = (role: Role, patientId: string | null): void => {
  if (role === "patient" && !patientId) {
    throw new ValidationError("a patient user needs a patient record", [
      { path: "patientId", message: "required for role patient" },
    ]);
  }
  if (role !== "patient" && patientId) {
    throw new ValidationError("only a patient user is linked to a patient record", [
      { path: "patientId", message: "allowed only for role patient" },
    ]);
  }
};

export const evolve = (s: User, e: Pick<StoredEvent, "type" | "data">): User => {
  const d = e.data as Record<string, unknown>;
  switch (e.type) {
    case "UserRegistered":
      return {
        status: d.pending ? "pending" : "active",
        userId: d.userId as string,
        role: d.role as Role,
        patientId: (d.patientId as string | null) ?? null,
      };
    case "UserRoleChanged":
      return s.status === "none"
        ? s
        : { ...s, role: d.role as Role, patientId: (d.patientId as string | null) ?? null };
    case "UserDeactivated":
      return s.status === "none" ? s : { ...s, status: "inactive" };
    case "UserReactivated":
    case "UserApproved":
      return s.status === "none" ? s : { ...s, status: "active" };
    default:
      return s;
  }
};

export const fold = (events: readonly Pick<StoredEvent, "type" | "data">[]): User =>
  events.reduce(evolve, { status: "none" } as User);

/** Decides several commands in turn, each on the state the previous ones left. */
export const decideAll = (cmds: readonly UserCommand[], state: User): NewEvent[] => {
  const out: NewEvent[] = [];
  let s = state;
  for (const cmd of cmds) {
    for (const e of decide(cmd, s)) {
      s = evolve(s, { type: e.type, data: e.data as Record<string, unknown> });
      out.push(e);
    }
  }
  return out;
};

/** Decides the events a command produces; pure (ids and hashes come in the command). */
export const decide = (cmd: UserCommand, s: User): NewEvent[] => {
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
      return assertNever(cmd);
  }
};
