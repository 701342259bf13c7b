// The checkpoint publisher's tree hashing, off the thread that serves
// requests and appends: events in (data and metadata as JSON text), the
// merkle_nodes rows they add out (see WorkerTreeHasher in tlog_store.ts).
/// <reference lib="deno.worker" />
import type { StoredEventRow } from "./stored_event.ts";
import { type EdgeNode, nodeRowsOf } from "./tlog_store.ts";

interface Request {
  id: number;
  size: number;
  edge: EdgeNode[];
  events: (StoredEventRow & { data: string; metadata: string })[];
}

self.onmessage = (ev: MessageEvent<Request>) => {
  const { id, size, edge, events } = ev.data;
  try {
    for (const r of events) {
      r.data = JSON.parse(r.data);
      r.metadata = JSON.parse(r.metadata);
    }
    self.postMessage({ id, rows: nodeRowsOf(size, edge, events) });
  } catch (err) {
    // names only: a message could quote a row's content
    self.postMessage({ id, error: (err as Error)?.name ?? "Error" });
  }
};
