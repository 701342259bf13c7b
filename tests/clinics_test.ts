import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { clinics } from "../projections/clinics.ts";
import {
  licenseStream,
  loadClinic,
  registerClinic,
  updateClinic,
} from "../src/clinical/clinics.ts";
import { clinicDecider } from "../src/domain/clinic.ts";
import {
  ConflictError,
  NotFoundError,
  PreconditionFailedError,
  ValidationError,
} from "../src/errors.ts";
import { sql } from "../src/store/sql.ts";
import { spec } from "./support/decider.ts";
import { eachDriver, type Harness } from "./support/harness.ts";
import { givenEventsThenRows } from "./support/projection.ts";

/** Clinics (issue 12, first slice): the decider, the read model, the license claim. */
const C = "00000000-0000-4000-8000-0000000000c1";
const meta = { actorId: "00000000-0000-4000-8000-0000000000a1" };

const details = (licenseNumber = "LIC-1", name = "North Clinic") => ({
  name,
  licenseNumber,
  address: { line1: "1 Main St", line2: null, city: "Springfield", state: "IL", zip: "62701" },
  phone: "555-0100",
  email: "north@example.org",
  operatingHours: { mon: [{ open: "08:00", close: "12:00" }, { open: "13:00", close: "17:00" }] },
  services: ["vaccination", "x-ray"],
});

const registered = { type: "ClinicRegistered" as const, data: { clinicId: C, ...details() } };

Deno.test("clinic decider: register, update only what changed, deactivate, reactivate", () => {
  spec(clinicDecider).given([]).when({ type: "RegisterClinic", clinicId: C, details: details() })
    .then([registered]);
  spec(clinicDecider).given([registered])
    .when({ type: "RegisterClinic", clinicId: C, details: details() }).thenThrows(ConflictError);
  spec(clinicDecider).given([]).when({ type: "UpdateClinic", changes: { name: "X" } })
    .thenThrows(NotFoundError);
  spec(clinicDecider).given([registered])
    .when({ type: "UpdateClinic", changes: { name: "North Clinic", phone: "555-0199" } })
    .then([{ type: "ClinicUpdated", data: { clinicId: C, changes: { phone: "555-0199" } } }]);
  spec(clinicDecider).given([registered]).when({ type: "UpdateClinic", changes: {}, active: true })
    .then([]);
  spec(clinicDecider).given([registered]).when({ type: "UpdateClinic", changes: {}, active: false })
    .then([{ type: "ClinicDeactivated", data: { clinicId: C } }]);
  spec(clinicDecider).given([registered, { type: "ClinicDeactivated", data: { clinicId: C } }])
    .when({ type: "UpdateClinic", changes: {}, active: true })
    .then([{ type: "ClinicReactivated", data: { clinicId: C } }]);
});

eachDriver("read model clinics: registered, updated, deactivated, reactivated", async (h) => {
  const rows = (given: Parameters<typeof givenEventsThenRows>[2]) =>
    givenEventsThenRows(
      h,
      clinics,
      given,
      sql`select id::text, name, name_lower, license_number, phone, email, services,
        operating_hours, active, version from clinics order by id`,
    );
  const stream = `clinic-${C}`;
  const row = {
    id: C,
    name: "North Clinic",
    name_lower: "north clinic",
    license_number: "LIC-1",
    phone: "555-0100",
    email: "north@example.org",
    services: ["vaccination", "x-ray"],
    operating_hours: details().operatingHours,
    active: true,
    version: 1,
  };
  assert.deepEqual(await rows([{ stream, ...registered }]), [row]);
  assert.deepEqual(
    await rows([{
      stream,
      type: "ClinicUpdated",
      data: { clinicId: C, changes: { name: "South Clinic", phone: null, services: [] } },
    }]),
    [{
      ...row,
      name: "South Clinic",
      name_lower: "south clinic",
      phone: null,
      services: [],
      version: 2,
    }],
  );
  const off = await rows([{ stream, type: "ClinicDeactivated", data: { clinicId: C } }]);
  assert.equal(off[0]!.active, false);
  assert.equal(off[0]!.email, "north@example.org");
  const on = await rows([{ stream, type: "ClinicReactivated", data: { clinicId: C } }]);
  assert.deepEqual([on[0]!.active, on[0]!.version], [true, 4]);
}, { catalog });

const eventCount = async (h: Harness) =>
  (await h.db.query<{ n: number }>(sql`select count(*)::int as n from events`))[0]!.n;

eachDriver("clinics: 20 concurrent registrations with one license: one wins", async (h) => {
  const stores = await Promise.all(
    Array.from({ length: 4 }, () => h.openStore({ projections: [clinics] })),
  );
  const results = await Promise.allSettled(
    Array.from(
      { length: 20 },
      (_, i) => registerClinic(stores[i % 4]!, details(i % 2 ? " lic-9 " : "LIC-9"), meta),
    ),
  );
  const ok = results.filter((r) => r.status === "fulfilled");
  const failed = results.filter((r) => r.status === "rejected");
  assert.equal(ok.length, 1);
  for (const f of failed) assert.ok(f.reason instanceof ConflictError, String(f.reason));
  const [n] = await h.db.query<{ n: number }>(sql`select count(*)::int as n from clinics`);
  assert.equal(n!.n, 1);
  assert.equal((await h.store.readStream(licenseStream("lic-9"))).length, 1);
}, { catalog, projections: [clinics] });

eachDriver(
  "clinics: a changed license is claimed; the old one stays with its clinic",
  async (h) => {
    const a = await registerClinic(h.store, details("A-1", "Alpha"), meta);
    const b = await registerClinic(h.store, details("B-1", "Beta"), meta);
    await assert.rejects(
      updateClinic(h.store, b.id, { licenseNumber: "a-1" }, meta),
      ConflictError,
    );
    const a2 = await updateClinic(h.store, a.id, { licenseNumber: "A-2" }, meta, a.version);
    assert.deepEqual([a2.licenseNumber, a2.version], ["A-2", 2]);
    // the old license is kept by its clinic: another may not take it, the clinic may go back
    await assert.rejects(
      updateClinic(h.store, b.id, { licenseNumber: "A-1" }, meta),
      ConflictError,
    );
    const a3 = await updateClinic(h.store, a.id, { licenseNumber: "a-1 " }, meta);
    assert.equal(a3.licenseNumber, "a-1");
    // a stale If-Match is a 412 and claims nothing
    const before = await eventCount(h);
    await assert.rejects(
      updateClinic(h.store, a.id, { licenseNumber: "Z-9" }, meta, 1),
      PreconditionFailedError,
    );
    assert.equal(await eventCount(h), before);
    const off = await updateClinic(h.store, a.id, { active: false }, meta);
    assert.equal(off.active, false);
    assert.equal((await loadClinic(h.store, a.id))!.active, false);
  },
  { catalog, projections: [clinics] },
);

eachDriver("clinics: bad input is a ValidationError and appends nothing", async (h) => {
  const bad: unknown[] = [
    { ...details(), extra: 1 },
    { ...details(), name: 5 },
    { ...details(), name: "  " },
    { ...details(), operatingHours: { mon: [{ open: "25:00", close: "26:00" }] } },
    { ...details(), operatingHours: { mon: [{ open: "12:00", close: "08:00" }] } },
    { ...details(), operatingHours: { funday: [] } },
    { ...details(), services: ["x".repeat(81)] },
    { ...details(), email: "not-an-email" },
    null,
  ];
  for (const input of bad) {
    await assert.rejects(
      registerClinic(h.store, input, meta),
      ValidationError,
      JSON.stringify(input),
    );
  }
  const c = await registerClinic(h.store, details(), meta);
  const before = await eventCount(h);
  await assert.rejects(updateClinic(h.store, c.id, { active: "yes" }, meta), ValidationError);
  await assert.rejects(updateClinic(h.store, c.id, { bogus: 1 }, meta), ValidationError);
  await assert.rejects(
    updateClinic(h.store, crypto.randomUUID(), { name: "X" }, meta),
    NotFoundError,
  );
  assert.equal(await eventCount(h), before);
}, { catalog, projections: [clinics] });
