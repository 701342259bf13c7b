import { MediaDeleted, MediaRestored, MediaUploaded } from "../../events/media.ts";
import { ConflictError, NotFoundError } from "../errors.ts";
import { type EventOf, eventsOf, type NewEventOf } from "../store/catalog.ts";
import { type AnyEvent, type Decider, foldEvents, requiredReason, unreachable } from "./decider.ts";

/** A photo or document as its own stream (`media-<id>`) describes it, for deciding. */
export type Media =
  | { status: "none" }
  | { status: "active" | "deleted"; mediaId: string; patientId: string };

export type MediaCommand =
  /** The pipeline stored the (checked, re-encoded) bytes: record them. */
  | { type: "RecordUpload"; data: NewEventOf<typeof MediaUploaded>["data"] }
  | { type: "DeleteMedia"; reason: string }
  | { type: "RestoreMedia" };

type MediaDefs = typeof MediaUploaded | typeof MediaDeleted | typeof MediaRestored;
export const isMediaEvent = eventsOf(MediaUploaded, MediaDeleted, MediaRestored);
export type MediaEvent = EventOf<MediaDefs>;
export type NewMediaEvent = NewEventOf<MediaDefs>;

const initialState = (): Media => ({ status: "none" });

export const evolve = (s: Media, e: MediaEvent): Media => {
  switch (e.type) {
    case "MediaUploaded":
      return { status: "active", mediaId: e.data.mediaId, patientId: e.data.patientId };
    case "MediaDeleted":
      return s.status === "none" ? s : { ...s, status: "deleted" };
    case "MediaRestored":
      return s.status === "none" ? s : { ...s, status: "active" };
    default:
      return unreachable(e, "event");
  }
};

export const fold = (events: readonly AnyEvent[]): Media =>
  foldEvents({ initialState, accepts: isMediaEvent, evolve }, events);

/** Pure: soft delete (with a reason, trimmed) and restore, each only from the other state. */
export const decide = (cmd: MediaCommand, s: Media): NewMediaEvent[] => {
  switch (cmd.type) {
    case "RecordUpload":
      if (s.status !== "none") throw new ConflictError("media exists");
      return [{ type: "MediaUploaded", data: cmd.data }];
    case "DeleteMedia": {
      // a delete without a reason is refused as such, whatever the item's state
      const reason = requiredReason(cmd.reason);
      if (s.status === "none") throw new NotFoundError("no such media");
      if (s.status === "deleted") throw new ConflictError("the media item is already deleted");
      return [{
        type: "MediaDeleted",
        data: { mediaId: s.mediaId, patientId: s.patientId, reason },
      }];
    }
    case "RestoreMedia":
      if (s.status === "none") throw new NotFoundError("no such media");
      if (s.status !== "deleted") throw new ConflictError("the media item is not deleted");
      return [{ type: "MediaRestored", data: { mediaId: s.mediaId, patientId: s.patientId } }];
    default:
      return unreachable(cmd, "command");
  }
};

export const mediaDecider: Decider<Media, MediaCommand, MediaEvent, NewMediaEvent> = {
  initialState,
  accepts: isMediaEvent,
  evolve,
  decide,
};
