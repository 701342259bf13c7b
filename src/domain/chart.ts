import {
  ChartEntryAmended,
  ChartEntryEnteredInError,
  ChartEntryRecorded,
  type ChartKindName,
  LabResultAcknowledged,
  LabTestStatusChanged,
} from "../../events/chart.ts";
import {
  ConflictError,
  type FieldIssue,
  ForbiddenError,
  IllegalTransitionError,
  NotFoundError,
  ValidationError,
} from "../errors.ts";
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
    /** Lab tests: who acknowledged the current result (null: nobody yet, or it changed since). */
    acknowledgedBy: Author | null;
  };

export const LAB_STATUSES = ["ordered", "in_progress", "completed", "cancelled"] as const;
export type LabStatus = (typeof LAB_STATUSES)[number];

/** The lab-test status machine: the moves allowed from each status (none from an end). */
export const LAB_MOVES: Readonly<Record<LabStatus, readonly LabStatus[]>> = {
  ordered: ["in_progress", "cancelled"],
  in_progress: ["completed", "cancelled"],
  completed: [],
  cancelled: [],
};

/** Fields whose change makes an acknowledged result unseen again. */
const RESULT_FIELDS = ["resultText", "results"];
const touchesResult = (changes: Record<string, unknown> | null) =>
  changes !== null && RESULT_FIELDS.some((f) => f in changes);

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
  | { type: "MarkEnteredInError"; by: Author; reason: string }
  | {
    type: "ChangeLabStatus";
    by: Author;
    status: LabStatus;
    /** `resultText`/`results` given with the move (already validated). */
    results: Record<string, unknown>;
    /** The kind's rules on the content after the move, on the state decided on. */
    validate?: (content: Record<string, unknown>) => FieldIssue[];
  }
  | { type: "AcknowledgeResult"; by: Author };

const defs = [
  ChartEntryRecorded,
  ChartEntryAmended,
  ChartEntryEnteredInError,
  LabTestStatusChanged,
  LabResultAcknowledged,
] as const;
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
        acknowledgedBy: null,
      };
    }
    case "ChartEntryAmended":
    case "LabTestStatusChanged": {
      if (s.status === "none") return s;
      const changes = e.data.changes as Record<string, unknown> | null;
      return {
        ...s,
        content: applyChanges(s.content, changes),
        acknowledgedBy: touchesResult(changes) ? null : s.acknowledgedBy,
      };
    }
    case "LabResultAcknowledged":
      return s.status === "none" ? s : { ...s, acknowledgedBy: e.data.acknowledgedBy };
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
    case "ChangeLabStatus": {
      if (s.status === "none" || s.kind !== "lab-tests") {
        throw new NotFoundError("no such lab test");
      }
      if (s.status === "entered_in_error") {
        throw new ConflictError("the entry was entered in error: record a new one");
      }
      const from = (s.content?.status ?? "ordered") as LabStatus;
      if (!(LAB_MOVES[from] ?? []).includes(cmd.status)) {
        throw new IllegalTransitionError(`a lab test cannot move from ${from} to ${cmd.status}`);
      }
      const changes = { ...cmd.results, status: cmd.status };
      const merged = applyChanges(s.content, changes);
      const issues = merged && cmd.validate ? cmd.validate(merged) : [];
      if (issues.length > 0) throw new ValidationError("the lab test is not valid", issues);
      const { entryId, patientId } = s;
      return [{
        type: "LabTestStatusChanged",
        data: { entryId, patientId, kind: "lab-tests", changedBy: cmd.by, changes },
      }];
    }
    case "AcknowledgeResult": {
      if (s.status === "none" || s.kind !== "lab-tests") {
        throw new NotFoundError("no such lab test");
      }
      if (s.status === "entered_in_error") {
        throw new ConflictError("the entry was entered in error");
      }
      if (s.content?.status !== "completed") {
        throw new ConflictError("only a completed lab test's result can be acknowledged");
      }
      if (s.content.orderedById !== cmd.by.id) {
        throw new ForbiddenError("only the ordering practitioner acknowledges the result");
      }
      // idempotent: the current result was seen already
      if (s.acknowledgedBy) return [];
      const { entryId, patientId } = s;
      return [{
        type: "LabResultAcknowledged",
        data: { entryId, patientId, kind: "lab-tests", acknowledgedBy: cmd.by },
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
