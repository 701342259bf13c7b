import {
  ChartEntryAmended,
  ChartEntryEnteredInError,
  ChartEntryRecorded,
  type ChartKindName,
} from "../../events/chart.ts";
import { ConflictError, type FieldIssue, NotFoundError, ValidationError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, requiredReason, unreachable } from "./decider.ts";

export interface Author {
  id: string;
  role: string;
}

export type ChartEntry =
  | { status: "none" }
  | {
    status: "current" | "entered_in_error";
    entryId: string;
    patientId: string;
    kind: ChartKindName;
    encounterId: string | null;
    clinicId: string | null;
    patientEntered: boolean;
    createdBy: Author;
    /** Null once the patient's key is destroyed. */
    content: Record<string, unknown> | null;
  };

export type ChartCommand =
  | {
    type: "RecordEntry";
    entryId: string;
    patientId: string;
    kind: ChartKindName;
    encounterId: string | null;
    clinicId: string | null;
    patientEntered: boolean;
    createdBy: Author;
    /** Already validated against the kind. */
    content: Record<string, unknown>;
  }
  | {
    type: "AmendEntry";
    by: Author;
    reason: string;
    changes: Record<string, unknown>;
    /**
     * The kind's rules on the content after the changes, asked on the state
     * the amendment is decided on (a concurrent amendment may have moved it).
     */
    validate?: (content: Record<string, unknown>) => FieldIssue[];
  }
  | { type: "MarkEnteredInError"; by: Author; reason: string };

const defs = [ChartEntryRecorded, ChartEntryAmended, ChartEntryEnteredInError] as const;
const isChartEvent = eventsOf(...defs);
export type ChartEvent = EventOf<(typeof defs)[number]>;
export type NewChartEvent = NewEventOf<(typeof defs)[number]>;

const initialState = (): ChartEntry => ({ status: "none" });

/** The content after `changes`: a null removes the field. */
export const applyChanges = (
  content: Record<string, unknown> | null,
  changes: Record<string, unknown> | null,
): Record<string, unknown> | null => {
  if (!content || !changes) return null;
  const out = { ...content };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
};

export const evolve = (s: ChartEntry, e: ChartEvent): ChartEntry => {
  switch (e.type) {
    case "ChartEntryRecorded": {
      const d = e.data;
      return {
        status: "current",
        entryId: d.entryId,
        patientId: d.patientId,
        kind: d.kind,
        encounterId: d.encounterId,
        clinicId: d.clinicId,
        patientEntered: d.patientEntered,
        createdBy: d.createdBy,
        content: (d.content as Record<string, unknown> | null) ?? null,
      };
    }
    case "ChartEntryAmended":
      return s.status === "none" ? s : {
        ...s,
        content: applyChanges(s.content, e.data.changes as Record<string, unknown> | null),
      };
    case "ChartEntryEnteredInError":
      return s.status === "none" ? s : { ...s, status: "entered_in_error" };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): ChartEntry =>
  foldEvents({ initialState, accepts: isChartEvent, evolve }, events);

/**
 * Pure: an entry is recorded once; amended (a new version with a reason,
 * never an edit in place) while current; marked entered-in-error once.
 */
export const decide = (cmd: ChartCommand, s: ChartEntry): NewChartEvent[] => {
  switch (cmd.type) {
    case "RecordEntry": {
      if (s.status !== "none") throw new ConflictError("the entry exists");
      const { type: _t, ...data } = cmd;
      return [{ type: "ChartEntryRecorded", data }];
    }
    case "AmendEntry": {
      if (s.status === "none") throw new NotFoundError("no such chart entry");
      const reason = requiredReason(cmd.reason);
      if (s.status === "entered_in_error") {
        throw new ConflictError("the entry was entered in error: record a new one");
      }
      if (Object.keys(cmd.changes).length === 0) {
        throw new ValidationError("nothing to change", [{
          path: "changes",
          message: "name at least one field",
        }]);
      }
      const merged = applyChanges(s.content, cmd.changes);
      const issues = merged && cmd.validate ? cmd.validate(merged) : [];
      if (issues.length > 0) throw new ValidationError("the amended entry is not valid", issues);
      const { entryId, patientId, kind } = s;
      return [{
        type: "ChartEntryAmended",
        data: { entryId, patientId, kind, amendedBy: cmd.by, reason, changes: cmd.changes },
      }];
    }
    case "MarkEnteredInError": {
      if (s.status === "none") throw new NotFoundError("no such chart entry");
      const reason = requiredReason(cmd.reason);
      if (s.status === "entered_in_error") return [];
      const { entryId, patientId, kind } = s;
      return [{
        type: "ChartEntryEnteredInError",
        data: { entryId, patientId, kind, amendedBy: cmd.by, reason },
      }];
    }
    default:
      return unreachable(cmd, "command");
  }
};

export const chartDecider: Decider<ChartEntry, ChartCommand, ChartEvent, NewChartEvent> = {
  initialState,
  accepts: isChartEvent,
  evolve,
  decide,
};
