/**
 * How fast the patients projection is rebuilt from the log on PostgreSQL at
 * TEST_DATABASE_URL: the issue 15 target is ≥ 50,000 events/s over
 * 1,000,000 events. Prints figures and the load average; never asserts on time.
 *
 *   BENCH_REBUILD_EVENTS=1000000 deno run -A tests/bench/patients_rebuild_bench.ts
 *
 * The log is seeded through the event store (PHI sealed as in production):
 * 20 events per patient, a registration and then one append of the other 19
 * (updates of sealed demographics, care-team changes, a delete and a
 * restore), so that every event is one the projection folds. With
 * BENCH_REBUILD_REFERENCE=1 the rebuild runs again with each page folded
 * event by event (the handlers, as before), and the two results are
 * compared row by row (tests/patients_fold_test.ts holds them equal too).
 */
import { catalog } from "../../events/index.ts";
import { patients } from "../../projections/patients.ts";
import { rebuildProjection } from "../../src/store/projection_engine.ts";
import { sql } from "../../src/store/sql.ts";
import type { Projection } from "../../src/store/types.ts";
import { openHarness } from "../support/harness.ts";
import { cpuMeter, envInt, fmtInt } from "./stats.ts";

const GENDERS = ["M", "F", "O", "U"] as const;
const STATES = ["CA", "NY", "TX", "WA", "MA", "IL"];

const demographics = (i: number) => ({
  mrn: `MRN-${i}`,
  firstName: `First${i}`,
  middleName: i % 3 === 0 ? `Middle${i}` : null,
  lastName: `Last${i}`,
  dateOfBirth: `19${50 + (i % 50)}-0${1 + (i % 9)}-1${i % 10}`,
  gender: GENDERS[i % GENDERS.length]!,
  phone: `+1555${String(i).padStart(7, "0")}`,
  email: `p${i}@example.test`,
  address: {
    line1: `${i} Main St`,
    line2: null,
    city: `City${i % 100}`,
    state: STATES[i % STATES.length]!,
    zip: String(10000 + (i % 89999)),
  },
  emergencyContact: { name: `Kin${i}`, phone: "+15550000000", relation: "sibling" },
  insurance: { payer: "Acme", memberId: `M${i}`, groupNumber: null },
});

/** Every event after the registration: 19 of them, all folded by the projection. */
const laterEvents = (i: number, patientId: string, practitioners: string[]) => {
  const out: { type: string; data: unknown }[] = [];
  for (let k = 0; k < 19; k++) {
    const pr = practitioners[(i + k) % practitioners.length]!;
    if (k % 5 === 1) {
      out.push({ type: "CareTeamMemberAdded", data: { patientId, practitionerId: pr } });
    } else if (k % 5 === 3) {
      out.push({
        type: "CareTeamMemberRemoved",
        data: { patientId, practitionerId: practitioners[(i + k - 2) % practitioners.length]! },
      });
    } else if (k === 10) out.push({ type: "PatientDeleted", data: { patientId, reason: "dup" } });
    else if (k === 12) out.push({ type: "PatientRestored", data: { patientId } });
    else {
      const changes = k % 2 === 0
        ? { email: `p${i}.${k}@example.test`, phone: null }
        : { lastName: `Last${i}-${k}`, address: demographics(i + k).address };
      out.push({ type: "PatientUpdated", data: { patientId, changes } });
    }
  }
  return out;
};

export const patientsRebuildBench = async (): Promise<string[]> => {
  const total = envInt("BENCH_REBUILD_EVENTS", 1_000_000);
  const perPatient = 20;
  const count = Math.max(1, Math.floor(total / perPatient));
  const out: string[] = [];
  const line = (s: string) => {
    console.log(s);
    out.push(s);
  };
  const h = await openHarness("postgres", { catalog, poolMax: 16 });
  try {
    const practitioners = Array.from({ length: 40 }, () => crypto.randomUUID());
    const ids = Array.from({ length: count }, () => crypto.randomUUID());
    const t0 = performance.now();
    const writers = 32;
    const run = async (f: (i: number) => Promise<unknown>) => {
      let next = 0;
      await Promise.all(
        Array.from({ length: writers }, async () => {
          while (next < count) await f(next++);
        }),
      );
    };
    await run((i) =>
      h.store.append(`patient-${ids[i]}`, "no_stream", [{
        type: "PatientRegistered",
        data: { patientId: ids[i], ...demographics(i) },
      }], { actorId: "bench" })
    );
    await run((i) =>
      h.store.append(`patient-${ids[i]}`, 1, laterEvents(i, ids[i]!, practitioners), {
        actorId: "bench",
      })
    );
    // as autovacuum would have by now: with an empty table's statistics the planner may
    // collect and sort every later event for a page instead of walking the index
    await h.db.query(sql`analyze events`);
    const seeded = count * perPatient;
    line(
      `patients rebuild: seeded ${fmtInt(seeded)} events (${fmtInt(count)} patients) in ${
        ((performance.now() - t0) / 1000).toFixed(0)
      } s`,
    );
    const snapshot = async () =>
      (await h.db.query<{ t: string }>(sql`select
        (select coalesce(md5(string_agg(p::text, '|' order by id)), '') from patients p) ||
        (select coalesce(md5(string_agg(c::text, '|' order by patient_id, practitioner_id)), '')
          from care_team c) as t`))[0]!.t;
    const time = async (p: Projection) => {
      const cpu = await cpuMeter(h.db);
      const t = performance.now();
      const n = await rebuildProjection(h.store, p);
      const s = (performance.now() - t) / 1000;
      const { appMs, pgMs, appFaults, pgFaults } = await cpu();
      const per = (ms: number | null) => ms === null ? "?" : `${(ms * 1000 / n).toFixed(1)} µs`;
      const k = (f: number | null) => f === null ? "?" : (f * 1000 / n).toFixed(1);
      return {
        n,
        s,
        cpu: `CPU an event: bench process ${per(appMs)}, PostgreSQL ${per(pgMs)}; ` +
          `page faults a thousand events: bench process ${k(appFaults)}, PostgreSQL ${k(pgFaults)}`,
      };
    };
    const load = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
    const eventByEvent: Projection = { ...patients, foldBatch: undefined };
    const reference = Deno.env.get("BENCH_REBUILD_REFERENCE") === "1";
    const rounds = envInt("BENCH_REBUILD_ROUNDS", 1);
    for (let r = 1; r <= rounds; r++) {
      const b = await time(patients);
      const rate = b.n / b.s;
      let versus = "";
      if (reference) {
        const sb = await snapshot();
        const a = await time(eventByEvent);
        if (await snapshot() !== sb) {
          throw new Error("the batched rebuild built other rows than the handlers");
        }
        versus = `; event by event ${fmtInt(a.n / a.s)} events/s, ratio ${
          (rate / (a.n / a.s)).toFixed(2)
        }`;
      }
      line(
        `patients rebuild over ${fmtInt(b.n)} events: ${fmtInt(rate)} events/s (${
          rate >= 50_000 ? "meets" : "below"
        } the ≥ 50,000 target)${versus}; ${b.cpu}; load average ${load()}`,
      );
    }
  } finally {
    await h.close();
  }
  return out;
};

if (import.meta.main) await patientsRebuildBench();
