import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { patients } from "../projections/patients.ts";
import type { Db } from "../src/store/db.ts";
import { buildProjection } from "../src/store/projection_engine.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import type { EventStore } from "../src/store/event_store.ts";
import type { NewEvent, Projection } from "../src/store/types.ts";
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

type Op =
  | { kind: "append"; stream: string; expected: "no_stream" | "any"; events: NewEvent[] }
  | { kind: "erase"; subject: string };

/**
 * A random history of 12 patients (registrations first): updates, deletes,
 * restores, care-team changes and erasures (a second erasure of one patient
 * too, and three in a row at the end: erased_at keeps the first).
 */
const scenario = (seed: number): { ops: Op[]; registrations: number; erased: Set<string> } => {
  const next = random(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const ids = Array.from({ length: 12 }, () => crypto.randomUUID());
  const staff = Array.from({ length: 4 }, () => crypto.randomUUID());
  const ops: Op[] = ids.map((id, i) => ({
    kind: "append",
    stream: `patient-${id}`,
    expected: "no_stream",
    events: [{ type: "PatientRegistered", data: { patientId: id, ...demographics(i) } }],
  }));
  const erased = new Set<string>();
  for (let step = 0; step < 250; step++) {
    const r = next();
    const id = pick(ids);
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
    if (events) ops.push({ kind: "append", stream: `patient-${id}`, expected: "any", events });
    else {
      ops.push({ kind: "erase", subject: `patient-${id}` });
      erased.add(id);
    }
  }
  for (let i = 0; i < 3; i++) ops.push({ kind: "erase", subject: `patient-${ids[0]}` });
  erased.add(ids[0]!);
  return { ops, registrations: ids.length, erased };
};

const run = (store: EventStore, op: Op) =>
  op.kind === "append"
    ? store.append(op.stream, op.expected, op.events)
    : shredSubject(store, op.subject, "erasure request", { actorId: "test" });

eachDriver(
  "patients projection: a batched fold leaves the rows its handlers leave, over any page size",
  async (h) => {
    const store = h.store;
    const { ops, erased } = scenario(7);
    for (const op of ops) await run(store, op);
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

let inlineFolds = 0;
const counted: Projection = {
  ...patients,
  foldBatch: async (db, events) => {
    inlineFolds++;
    await patients.foldBatch!(db, events);
  },
};

eachDriver(
  "patients projection: inline, a group-commit batch is folded at once, to the handlers' rows",
  async (h) => {
    const store = h.store;
    const { ops, registrations } = scenario(11);
    for (const op of ops.slice(0, registrations)) await run(store, op);
    // the rest 16 at a time, concurrently: they commit in batches of several
    // events, which the inline projection folds with one foldBatch each
    inlineFolds = 0;
    const rest = ops.slice(registrations);
    for (let i = 0; i < rest.length; i += 16) {
      await Promise.all(rest.slice(i, i + 16).map((op) => run(store, op)));
    }
    assert.ok(inlineFolds > 0, "batches were folded at once");
    const live = await rows(store.db);
    await buildProjection(store, { ...patients, foldBatch: undefined }, { pageSize: 50 });
    assert.equal(await rows(store.db), live, "event by event, in log order");
  },
  { catalog, projections: [counted] },
);
