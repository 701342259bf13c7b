import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { projections } from "../projections/index.ts";
import { encounterStream, listEncounters } from "../src/clinical/encounters.ts";
import type { Db } from "../src/store/db.ts";
import { EventStore } from "../src/store/event_store.ts";
import { subjectKeyShredder } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { eachDriver } from "./support/harness.ts";

/** The same database, counting the statements sent through it. */
const counting = (db: Db): { db: Db; count: () => number } => {
  let n = 0;
  return {
    db: {
      ...db,
      kind: db.kind,
      query: (q) => (n++, db.query(q)),
      batch: (qs) => (n += qs.length, db.batch(qs)),
    },
    count: () => n,
  };
};

eachDriver(
  "encounters: a patient's list is read in one query, reasons unsealed, soonest first",
  async (h) => {
    const patientId = crypto.randomUUID();
    const practitionerId = crypto.randomUUID();
    const starts = ["2031-05-03T09:00:00Z", "2031-05-01T09:00:00Z", "2031-05-02T09:00:00Z"];
    const ids: string[] = [];
    for (const [i, startsAt] of starts.entries()) {
      const encounterId = crypto.randomUUID();
      ids.push(encounterId);
      await h.store.append(encounterStream(encounterId), "no_stream", [{
        type: "EncounterPlanned",
        data: { encounterId, patientId, practitionerId, startsAt, reason: `reason ${i}` },
      }]);
    }
    await h.store.append(encounterStream(ids[0]!), 1, [{
      type: "EncounterStatusChanged",
      data: { encounterId: ids[0]!, patientId, from: "planned", to: "in_progress" },
    }]);
    // another patient's encounter stays out of the list
    const otherId = crypto.randomUUID();
    await h.store.append(encounterStream(otherId), "no_stream", [{
      type: "EncounterPlanned",
      data: {
        encounterId: otherId,
        patientId: crypto.randomUUID(),
        practitionerId,
        startsAt: "2031-05-01T08:00:00Z",
        reason: "other",
      },
    }]);
    // the reason is sealed in the log
    const [raw] = await h.db.query<{ data: { reason: unknown } }>(
      sql`select data from events where stream_id = ${encounterStream(ids[1]!)}`,
    );
    assert.notEqual(raw!.data.reason, "reason 1");

    const c = counting(h.db);
    // the same key cache as the writer: the patient's data key is not re-read
    const store = new EventStore({
      db: c.db,
      catalog,
      codec: h.store.codec,
      shredder: subjectKeyShredder(h.store.codec),
    });
    const list = await listEncounters(store, patientId);
    assert.equal(c.count(), 1);
    assert.deepEqual(list.map((e) => [e.id, e.reason, e.status, e.version]), [
      [ids[1], "reason 1", "planned", 1],
      [ids[2], "reason 2", "planned", 1],
      [ids[0], "reason 0", "in_progress", 2],
    ]);
    assert.deepEqual(await listEncounters(store, crypto.randomUUID()), []);
  },
  { catalog, projections },
);
