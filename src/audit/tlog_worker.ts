// Hashing off the thread that serves requests and appends, for the
// checkpoint publisher's tree (`nodes`: the merkle_nodes rows some events
// add; WorkerTreeHasher in tlog_store.ts) and for `audit verify` (`verify`:
// a page's leaf hashes and whether each event's chain hash holds;
// hashedPagesFromDb in tlog_verify.ts). A page of events comes as one JSON
// text, parsed here.
/// <reference lib="deno.worker" />
import { type EdgeNode, eventPageRows, nodeRowsOf } from "./tlog_store.ts";
import { hashPage } from "./tlog_verify.ts";

/** `json`: a page of events as `eventPage` (tlog_store.ts) has PostgreSQL write it. */
type Request =
  | { id: number; kind: "nodes"; size: number; edge: EdgeNode[]; json: string }
  | { id: number; kind: "verify"; json: string };

self.onmessage = (ev: MessageEvent<Request>) => {
  const m = ev.data;
  try {
    const events = eventPageRows(m.json);
    if (m.kind === "nodes") {
      self.postMessage({ id: m.id, rows: nodeRowsOf(m.size, m.edge, events) });
    } else {
      const page = hashPage(events);
      self.postMessage({ id: m.id, page }, { transfer: [page.chainOk.buffer as ArrayBuffer] });
    }
  } catch (err) {
    // names only: a message could quote a row's content
    self.postMessage({ id: m.id, error: (err as Error)?.name ?? "Error" });
  }
};
