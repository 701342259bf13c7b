import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { patients } from "../projections/patients.ts";
import type { Db } from "../src/store/db.ts";
import { buildProjection } from "../src/store/projection_engine.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { Projection } from "../src/store/types.ts";
import { eachDriver } from "./support/harness.ts";

/** Every row of the patients projection's tables, in a fixed order. */
const rows = async (db: Db): Promise<string> => {
  const [r] = await db.query<{ p: string | null; c: string | null }>(sql`select
    (select string_agg(p::text, E'\\n' order by id) from patients p) as p,
    (select string_agg(c::text, E'\\n' order by patient_id, practitioner_id) from care_team c)
      as c`);
  return `${r!.p}\n--\n${r!.c}`;
};

/** A small deterministic generator, so a failure can be replayed. */
const random = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};

const demographics = (i: number) => ({
  mrn: `MRN-${i}`,
  firstName: `First${i}`,
  middleName: null,
  lastName: `Last${i}`,
  dateOfBirth: "1970-01-0" + (1 + (i % 9)),
  gender: "F",
  phone: null,
  email: `p${i}@example.test`,
  address: { line1: "1 Main St", line2: null, city: `City${i}`, state: "CA", zip: "10001" },
  emergencyContact: null,
  insurance: null,
});

eachDriver(
  "patients projection: a batched fold leaves the rows its handlers leave, over any page size",
  async (h) => {
    const store = h.store;
    const next = random(7);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
    const ids = Array.from({ length: 12 }, () => crypto.randomUUID());
    const staff = Array.from({ length: 4 }, () => crypto.randomUUID());
    const registered: string[] = [];
    const erased = new Set<string>();
    for (let step = 0; step < 260; step++) {
      const r = next();
      if (registered.length < ids.length && (registered.length === 0 || r < 0.12)) {
        const id = ids[registered.length]!;
        await store.append(`patient-${id}`, "no_stream", [{
          type: "PatientRegistered",
          data: { patientId: id, ...demographics(registered.length) },
        }]);
        registered.push(id);
        continue;
      }
      const id = pick(registered);
      const live = !erased.has(id);
      const events = r < 0.4 && live
        ? [{
          type: "PatientUpdated",
          data: {
            patientId: id,
            changes: pick([
              { email: null },
              { email: `e${step}@example.test`, lastName: `L${step}` },
              { address: null },
              { address: { ...demographics(step).address, state: "NY" } },
              { dateOfBirth: "1980-02-0" + (1 + (step % 9)), gender: "M" },
              { firstName: `F${step}`, phone: "+15550001111" },
            ]),
          },
        }]
        : r < 0.5 && live
        ? [{ type: "PatientDeleted", data: { patientId: id, reason: "duplicate" } }]
        : r < 0.58
        ? [{ type: "PatientRestored", data: { patientId: id } }]
        : r < 0.8
        ? [{ type: "CareTeamMemberAdded", data: { patientId: id, practitionerId: pick(staff) } }]
        : r < 0.97
        ? [{ type: "CareTeamMemberRemoved", data: { patientId: id, practitionerId: pick(staff) } }]
        : null;
      if (events) await store.append(`patient-${id}`, "any", events);
      else {
        // a second erasure of the same patient too: erased_at keeps the first
        await shredSubject(store, `patient-${id}`, "erasure request", { actorId: "test" });
        erased.add(id);
      }
    }
    // three erasures in a row: any page of 3 holds two of them (erased_at keeps the first)
    for (let i = 0; i < 3; i++) {
      await shredSubject(store, `patient-${ids[0]}`, "erasure request", { actorId: "test" });
    }
    erased.add(ids[0]!);
    assert.ok(erased.size > 1, "the scenario erases patients");
    const live = await rows(store.db);
    const eventByEvent: Projection = { ...patients, foldBatch: undefined };
    for (const pageSize of [1, 2, 3, 17, 2000]) {
      await buildProjection(store, patients, { pageSize });
      assert.equal(await rows(store.db), live, `batched, pages of ${pageSize}`);
    }
    await buildProjection(store, eventByEvent, { pageSize: 50 });
    assert.equal(await rows(store.db), live, "event by event");
  },
  { catalog, projections: [patients] },
);
