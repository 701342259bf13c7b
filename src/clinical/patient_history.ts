import { NotFoundError } from "../errors.ts";
import type { EventStore } from "../store/event_store.ts";
import { patientStream } from "./patients.ts";
import { staffNames } from "./staff.ts";

/** One event of a patient's record with who, when and from where. */
export interface PatientHistoryItem {
  version: number;
  type: string;
  recordedAt: string;
  actorId: string | null;
  actorRole: string | null;
  actorName: string | null;
  ip: string | null;
  userAgent: string | null;
  requestId: string | null;
  data: Record<string, unknown>;
}

/** The record's events (unsealed), oldest first, each naming its actor; 404 when there are none. */
export const patientHistory = async (
  store: EventStore,
  patientId: string,
): Promise<PatientHistoryItem[]> => {
  const events = await store.readStream(patientStream(patientId));
  if (events.length === 0) throw new NotFoundError("no such patient");
  const names = await staffNames(store, events.map((e) => e.metadata.actorId));
  return events.map((e) => ({
    version: e.streamVersion,
    type: e.type,
    recordedAt: e.recordedAt.toISOString(),
    actorId: e.metadata.actorId ?? null,
    actorRole: e.metadata.actorRole ?? null,
    actorName: (e.metadata.actorId && names.get(e.metadata.actorId)) ?? null,
    ip: e.metadata.ip ?? null,
    userAgent: e.metadata.userAgent ?? null,
    requestId: e.metadata.requestId ?? null,
    data: e.data,
  }));
};
