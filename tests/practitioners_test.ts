import assert from "node:assert/strict";
import { practitionerLicenseStream, practitionerStream } from "../src/clinical/practitioners.ts";
import { practitionerDecider } from "../src/domain/practitioner.ts";
import { NotFoundError, ValidationError } from "../src/errors.ts";
import { shredSubject } from "../src/store/shred.ts";
import { sql } from "../src/store/sql.ts";
import { spec } from "./support/decider.ts";
import { countEvents, eachApp, fieldPaths, problem } from "./support/directory.ts";
import { bearer, createUser, login } from "./support/users.ts";

/** Practitioner profiles (issue 12): the decider, the routes, the license claim, the sealed bio. */
const U = "00000000-0000-4000-8000-0000000000b1";

const profile = (licenseNumber = "PR-1") => ({
  licenseNumber,
  specialization: "dermatology",
  yearsOfExperience: 12,
  qualifications: ["MD", "board certified"],
  bio: "Skin doctor, likes birds.",
});

Deno.test("practitioner decider: set needs a license, updates record only what changed", () => {
  const set = {
    type: "PractitionerProfileSet" as const,
    data: { userId: U, ...profile() },
  };
  const cmd = (changes: Record<string, unknown>, isPractitioner = true) => ({
    type: "SetProfile" as const,
    userId: U,
    isPractitioner,
    changes,
  });
  spec(practitionerDecider).given([]).when(cmd(profile())).then([set]);
  spec(practitionerDecider).given([]).when(cmd({ licenseNumber: "X" })).then([{
    type: "PractitionerProfileSet",
    data: {
      userId: U,
      licenseNumber: "X",
      specialization: null,
      yearsOfExperience: null,
      qualifications: [],
      bio: null,
    },
  }]);
  spec(practitionerDecider).given([]).when(cmd({ bio: "hi" })).thenThrows(ValidationError);
  spec(practitionerDecider).given([]).when(cmd(profile(), false)).thenThrows(NotFoundError);
  spec(practitionerDecider).given([set]).when(cmd({ bio: "x" }, false)).thenThrows(NotFoundError);
  spec(practitionerDecider).given([set])
    .when(cmd({ yearsOfExperience: 12, qualifications: ["MD"], bio: null }))
    .then([{
      type: "PractitionerProfileUpdated",
      data: { userId: U, qualifications: ["MD"], bio: null },
    }]);
  spec(practitionerDecider).given([set]).when(cmd(profile())).then([]);
});

eachApp(
  "practitioner profiles over HTTP: own or admin's edits, directory reads",
  async (t, api) => {
    const { call, ids } = api;
    const path = `/v1/practitioners/${ids.practitioner}/profile`;
    // none yet; the first needs a license number
    await problem(await call("GET", path, undefined, "reception"), 404, "/problems/not-found");
    const noLicense = await problem(
      await call("PATCH", path, { bio: "hello" }, "practitioner"),
      422,
      "/problems/validation",
    );
    assert.deepEqual(fieldPaths(noLicense), ["licenseNumber"]);
    const first = await call("PATCH", path, profile(" PR-1 "), "practitioner");
    assert.equal(first.status, 200);
    assert.equal(first.headers.get("etag"), '"1"');
    const body = await first.json();
    assert.deepEqual({ ...body, createdAt: undefined, updatedAt: undefined }, {
      userId: ids.practitioner,
      ...profile("PR-1"),
      createdAt: undefined,
      updatedAt: undefined,
    });
    // every signed-in role reads it
    for (
      const role of ["admin", "clinical_ops", "practitioner2", "reception", "auditor", "analyst"]
    ) {
      const r = await call("GET", path, undefined, role);
      assert.equal(r.status, 200, role);
      assert.equal(r.headers.get("etag"), '"1"');
      assert.equal((await r.json()).specialization, "dermatology");
    }
    // If-Match: stale 412 (nothing appended), current 200; an unchanged PATCH appends nothing
    const before = await countEvents(t);
    await problem(
      await call("PATCH", path, { yearsOfExperience: 13 }, "practitioner", { "if-match": '"9"' }),
      412,
      "/problems/precondition-failed",
    );
    await problem(
      await call("PATCH", path, { licenseNumber: "PR-NEW" }, "practitioner", { "if-match": '"9"' }),
      412,
      "/problems/precondition-failed",
    );
    assert.equal(await countEvents(t), before, "a stale edit claims no license");
    const same = await call("PATCH", path, { yearsOfExperience: 12 }, "practitioner");
    assert.equal(same.headers.get("etag"), '"1"');
    assert.equal(await countEvents(t), before);
    const upd = await call("PATCH", path, { yearsOfExperience: 13 }, "practitioner", {
      "if-match": '"1"',
    });
    assert.equal(upd.status, 200);
    assert.deepEqual([upd.headers.get("etag"), (await upd.json()).yearsOfExperience], ['"2"', 13]);
    // an admin edits anyone's; another practitioner and clinical ops may not (audited refusals)
    const byAdmin = await call("PATCH", path, { specialization: "oncology" });
    assert.equal((await byAdmin.json()).specialization, "oncology");
    const denied = await countEvents(t, "AccessDenied");
    for (const role of ["practitioner2", "clinical_ops", "reception", "auditor", "analyst"]) {
      await problem(await call("PATCH", path, { bio: "mine" }, role), 403, "/problems/forbidden");
    }
    assert.equal(await countEvents(t, "AccessDenied"), denied + 5);
    const [refusal] = await t.runtime.db.query<{ data: Record<string, unknown> }>(
      sql`select data from events where type = 'AccessDenied' order by global_position limit 1
      offset ${denied}`,
    );
    assert.deepEqual(refusal!.data, {
      actorId: ids.practitioner2,
      action: "practitioner_profile.update",
      resourceId: ids.practitioner,
    });
    // the license is unique among practitioners (trimmed, any case); the holder keeps it
    await problem(
      await call(
        "PATCH",
        `/v1/practitioners/${ids.practitioner2}/profile`,
        { licenseNumber: "pr-1" },
        "practitioner2",
      ),
      409,
      "/problems/conflict",
    );
    assert.equal(
      (await call("PATCH", `/v1/practitioners/${ids.practitioner2}/profile`, {
        licenseNumber: "PR-2",
      }, "practitioner2")).status,
      200,
    );
    const moved = await call("PATCH", path, { licenseNumber: "PR-3" }, "practitioner");
    assert.equal((await moved.json()).licenseNumber, "PR-3");
    await problem(
      await call("PATCH", `/v1/practitioners/${ids.practitioner2}/profile`, {
        licenseNumber: "PR-1",
      }),
      409,
      "/problems/conflict",
    );
    assert.equal(
      (await call("PATCH", path, { licenseNumber: "pr-1" }, "practitioner")).status,
      200,
    );
    // only practitioners have a profile; unknown users are 404 too
    for (const id of [ids.reception, ids.admin, crypto.randomUUID()]) {
      const p = `/v1/practitioners/${id}/profile`;
      await problem(await call("PATCH", p, profile("PR-9")), 404, "/problems/not-found");
      await problem(await call("GET", p), 404, "/problems/not-found");
    }
    assert.equal((await t.runtime.store.readStream(practitionerLicenseStream("PR-9"))).length, 0);
  },
);

eachApp(
  "practitioner profiles: 20 practitioners claim one license at once: one wins",
  async (t, api) => {
    const users = await Promise.all(
      Array.from(
        { length: 20 },
        (_, i) => createUser(t.runtime, "practitioner", `c${i}@clinic.test`),
      ),
    );
    const answers = await Promise.all(
      users.map((u, i) =>
        api.call("PATCH", `/v1/practitioners/${u.id}/profile`, {
          licenseNumber: i % 2 ? "race-1" : " RACE-1",
        })
      ),
    );
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 1, statuses.join(","));
    assert.equal(statuses.filter((s) => s === 409).length, 19, statuses.join(","));
    for (const r of answers) await r.body?.cancel();
    assert.equal(await countEvents(t, "PractitionerLicenseClaimed"), 1);
    assert.equal(await countEvents(t, "PractitionerProfileSet"), 1);
    // one practitioner's own concurrent edits: each decided in turn, none lost (one who lost
    // the race, so that their profile stream starts empty: the winner's holds its claim)
    const me = users[statuses.indexOf(409)]!;
    const token = (await login(t.app, me.email)).body.accessToken;
    await api.call("PATCH", `/v1/practitioners/${me.id}/profile`, { licenseNumber: "OWN-1" });
    const edits = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        t.app.request(`/v1/practitioners/${me.id}/profile`, {
          method: "PATCH",
          headers: { ...bearer(token), "content-type": "application/json" },
          body: JSON.stringify({ qualifications: [`Q${i}`] }),
        })),
    );
    assert.deepEqual(edits.map((r) => r.status), Array(20).fill(200));
    for (const r of edits) await r.body?.cancel();
    assert.equal(
      (await t.runtime.store.readStream(practitionerStream(me.id))).length,
      21,
      "one set, twenty updates",
    );
  },
);

eachApp(
  "practitioner profiles: the bio is sealed under the user's key and erased with it",
  async (t, api) => {
    const { call, ids } = api;
    const bio = "A distinctive bio sentence 7731.";
    const res = await call("PATCH", `/v1/practitioners/${ids.practitioner}/profile`, {
      ...profile("SEAL-1"),
      bio,
    });
    assert.equal(res.status, 200);
    await call("PATCH", `/v1/practitioners/${ids.practitioner}/profile`, { bio: `${bio} more` });
    const [raw] = await t.runtime.db.query<{ n: number }>(
      sql`select count(*)::int as n from events where data::text like ${"%7731%"}`,
    );
    assert.equal(raw!.n, 0, "the bio is not in the events table in the clear");
    await shredSubject(t.runtime.store, `user-${ids.practitioner}`, "test erasure", {
      actorId: ids.admin,
    });
    const [row] = await t.runtime.db.query<{ bio: string | null; license_number: string }>(
      sql`select bio, license_number from practitioner_profiles
      where user_id = ${ids.practitioner}::uuid`,
    );
    assert.deepEqual(row, { bio: null, license_number: "SEAL-1" });
    const events = await t.runtime.store.readStream(practitionerStream(ids.practitioner!));
    assert.deepEqual(events.map((e) => [e.data.bio, e.erasedFields]), [[null, ["bio"]], [null, [
      "bio",
    ]]]);
    // the erased user is gone from the directory
    await problem(
      await call("GET", `/v1/practitioners/${ids.practitioner}/profile`),
      404,
      "/problems/not-found",
    );
  },
);

eachApp("practitioner profiles: bad input is a 4xx problem naming every field", async (t, api) => {
  const { call, ids } = api;
  const path = `/v1/practitioners/${ids.practitioner}/profile`;
  await call("PATCH", path, profile("BAD-1"));
  const before = await countEvents(t);
  const bad = await problem(
    await call("PATCH", path, {
      yearsOfExperience: 81,
      qualifications: "MD",
      specialization: 5,
      licenseNumber: "   ",
      bio: "x".repeat(4001),
      extra: 1,
    }, "practitioner"),
    422,
    "/problems/validation",
  );
  assert.deepEqual(fieldPaths(bad), [
    "bio",
    "extra",
    "licenseNumber",
    "qualifications",
    "specialization",
    "yearsOfExperience",
  ]);
  for (const years of [-1, 1.5, "5", true]) {
    assert.deepEqual(
      fieldPaths(
        await problem(
          await call("PATCH", path, { yearsOfExperience: years }),
          422,
          "/problems/validation",
        ),
      ),
      ["yearsOfExperience"],
    );
  }
  assert.deepEqual(
    fieldPaths(
      await problem(
        await call("PATCH", path, { bio: "a\u0000b" }),
        422,
        "/problems/validation",
      ),
    ),
    ["bio"],
  );
  assert.deepEqual(
    fieldPaths(
      await problem(
        await call("PATCH", path, { qualifications: ["ok", 3] }),
        422,
        "/problems/validation",
      ),
    ),
    ["qualifications.1"],
  );
  await problem(await call("PATCH", path, "{"), 400, "/problems/malformed-request");
  await problem(await call("GET", "/v1/practitioners/nope/profile"), 422, "/problems/validation");
  await problem(
    await call("GET", `/v1/practitioners/${ids.practitioner}%00/profile`),
    404,
    "/problems/not-found",
  );
  assert.equal(await countEvents(t), before);
});
