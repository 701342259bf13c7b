import assert from "node:assert/strict";
import { catalog } from "../events/index.ts";
import { endSession, runSessionCommand, sessionStream } from "../src/auth/session_commands.ts";
import { careTeamStream } from "../src/clinical/care_team.ts";
import { changeEncounterStatus, encounterStream } from "../src/clinical/encounters.ts";
import { careTeamDecider, fold as foldTeam } from "../src/domain/care_team.ts";
import { handleCommand } from "../src/domain/command_handler.ts";
import { encounterDecider } from "../src/domain/encounter.ts";
import { ConcurrencyError, PreconditionFailedError } from "../src/errors.ts";
import type { EventStore } from "../src/store/event_store.ts";
import { eachDriver } from "./support/harness.ts";

const P = "3a0f6c2e-5b1d-4e7f-8a9b-0c1d2e3f4a5b";
const D = "0d7c2a55-5a0e-4c57-8d4e-2f0c3b9a1e77";

const plan = async (store: EventStore) => {
  const encounterId = crypto.randomUUID();
  await handleCommand(store, encounterDecider, encounterStream(encounterId), {
    type: "PlanEncounter",
    encounterId,
    patientId: P,
    practitionerId: D,
    startsAt: "2026-12-01T09:00:00Z",
    reason: "follow-up",
  });
  return encounterId;
};

/** A store whose first read is followed, before the caller appends, by another writer's append. */
const racing = (store: EventStore, stream: string) => {
  let raced = false;
  return {
    append: store.append.bind(store),
    readStream: async (id: string, opts?: { unseal?: boolean }) => {
      const events = await store.readStream(id, opts);
      if (!raced) {
        raced = true;
        await store.append(stream, events.length, [{
          type: "CareTeamMemberAdded",
          data: { patientId: P, practitionerId: crypto.randomUUID() },
        }]);
      }
      return events;
    },
  };
};

const add = (practitionerId: string) => ({
  type: "AddMember" as const,
  patientId: P,
  practitionerId,
});

eachDriver(
  "command handler: 20 concurrent status changes on one encounter all succeed, one appends",
  async (h) => {
    const id = await plan(h.store);
    // each loser of the append re-reads, sees in_progress and decides nothing
    const views = await Promise.all(
      Array.from({ length: 20 }, () => changeEncounterStatus(h.store, id, "in_progress", {})),
    );
    assert.ok(views.every((v) => v.status === "in_progress" && v.version === 2));
    const events = await h.store.readStream(encounterStream(id));
    assert.deepEqual(events.map((e) => e.type), ["EncounterPlanned", "EncounterStatusChanged"]);
  },
  { catalog },
);

eachDriver(
  "command handler: 20 concurrent care-team adds on one stream lose no update",
  async (h) => {
    const ids = Array.from({ length: 20 }, () => crypto.randomUUID());
    const results = await Promise.all(
      ids.map((id) =>
        handleCommand(h.store, careTeamDecider, careTeamStream(P), add(id), { retry: true })
      ),
    );
    assert.deepEqual(results.map((r) => r.version).sort((a, b) => a - b), ids.map((_, i) => i + 1));
    const team = foldTeam(await h.store.readStream(careTeamStream(P)));
    assert.deepEqual([...team].sort(), [...ids].sort());
  },
  { catalog },
);

eachDriver(
  "command handler: a stale If-Match is a 412 and appends nothing; a conflict under If-Match is never retried",
  async (h) => {
    const stream = careTeamStream(P);
    const first = await handleCommand(h.store, careTeamDecider, stream, add(D));
    assert.equal(first.version, 1);
    await assert.rejects(
      handleCommand(h.store, careTeamDecider, stream, add(crypto.randomUUID()), {
        ifMatch: 0,
        retry: true,
      }),
      PreconditionFailedError,
    );
    assert.equal((await h.store.readStream(stream)).length, 1);
    // If-Match was right when read, but another writer got in before the append
    await assert.rejects(
      handleCommand(racing(h.store, stream), careTeamDecider, stream, add(crypto.randomUUID()), {
        ifMatch: 1,
        retry: true,
      }),
      PreconditionFailedError,
    );
    assert.equal((await h.store.readStream(stream)).length, 2); // only the other writer's
  },
  { catalog },
);

eachDriver(
  "command handler: a conflict is retried on the newer state only when the command allows it",
  async (h) => {
    const stream = careTeamStream(P);
    await assert.rejects(
      handleCommand(racing(h.store, stream), careTeamDecider, stream, add(D)),
      ConcurrencyError,
    );
    assert.equal((await h.store.readStream(stream)).length, 1);
    const r = await handleCommand(racing(h.store, stream), careTeamDecider, stream, add(D), {
      retry: true,
    });
    assert.equal(r.version, 3);
    assert.deepEqual(r.events, [{
      type: "CareTeamMemberAdded",
      data: { patientId: P, practitionerId: D },
    }]);
    assert.ok(r.state.has(D));
  },
  { catalog },
);

eachDriver(
  'command handler: a session ends once, however many logouts race (no more "any" appends)',
  async (h) => {
    const sessionId = crypto.randomUUID();
    await runSessionCommand(h.store, sessionId, {
      type: "StartSession",
      sessionId,
      userId: D,
      refreshTokenDigest: "d",
      amr: ["pwd"],
    }, {});
    await Promise.all([
      endSession(h.store, sessionId, "logout", {}),
      endSession(h.store, sessionId, "logout_all", {}),
      endSession(h.store, sessionId, "logout", {}),
      runSessionCommand(h.store, sessionId, { type: "VerifySecondFactor" }, {}),
    ]);
    const types = (await h.store.readStream(sessionStream(sessionId))).map((e) => e.type);
    assert.equal(types.filter((t) => t === "SessionEnded").length, 1);
    assert.equal(types[0], "UserLoggedIn");
    assert.equal(types.at(-1), "SessionEnded"); // nothing after the end
  },
  { catalog },
);
