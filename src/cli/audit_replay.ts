// `deno task audit replay --patient <id> --operator <email>`: prints one record's
// timeline, PHI unsealed where the key still exists. A read of PHI: the
// replay is appended to the log (AuditQueried, query "replay", naming the
// operator) before a line is printed, and nothing is printed if it cannot be.
// Exit codes: 0 printed, 1 refused (unknown patient or operator), 2 bad usage.
// (Run through src/cli/audit.ts, which picks the subcommand's module.)
import { z } from "zod";
import { patientInLog } from "../clinical/disclosures.ts";
import {
  breakGlassGrants,
  countTimeline,
  type ReplayWindow,
  timeline,
  TimelineFormatter,
} from "../clinical/replay.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { openCli, parseCliArgs, usageError } from "./common.ts";

const USAGE = `usage: deno task audit replay --patient ID --operator EMAIL [--from T] [--to T]

replay   prints a readable timeline of one patient's record, oldest first: every event that
         names the patient (the record, reads and list reads, care team, encounters, media,
         proxies, grants, break-glass, denials, audit uses). Each line: time, event type, actor
         name (role), a short summary with the PHI unsealed ("[erased]" once the patient's key
         was destroyed), and [break-glass; grant ID; on behalf of ID] when the access went
         through one. Codes and password hashes are never printed.
  --patient ID      the patient's id (uuid)
  --operator EMAIL  your own account, an active admin or auditor: recorded as who read it
  --from T          only events recorded at or after T (ISO 8601)
  --to T            only events recorded before T (ISO 8601)
This is a read of PHI: it is appended to the log (AuditQueried, query "replay") before anything
is printed. Exit 0 printed, 1 refused (unknown patient or operator), 2 bad usage.
On the embedded database, stop the server first.`;

const { values, positionals } = parseCliArgs("audit", USAGE, {
  patient: { type: "string" },
  operator: { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
}, { positionals: true });
if (positionals.length > 1) usageError("audit", `unexpected argument '${positionals[1]}'`);
if (!values.patient) usageError("audit", "--patient is required");
if (!z.uuid().safeParse(values.patient).success) usageError("audit", "--patient must be a uuid");
if (!values.operator) usageError("audit", "--operator is required (your own account's email)");
const time = (name: string, v: string | undefined): Date | undefined => {
  if (v === undefined) return undefined;
  if (!z.iso.datetime({ offset: true }).safeParse(v).success) {
    usageError("audit", `--${name} must be an ISO 8601 time (e.g. 2026-01-31T00:00:00Z)`);
  }
  return new Date(v);
};
const from = time("from", values.from);
const to = time("to", values.to);
if (from && to && from > to) usageError("audit", "--to is before --from");
const patientId = values.patient!;

const refuse = (message: string) => {
  console.error(`audit: ${message}`);
  Deno.exitCode = 1;
};

/** The header line and one line per event, written as they are read. */
const print = async (store: EventStore, window: ReplayWindow, count: number) => {
  const fmt = new TimelineFormatter(store, await breakGlassGrants(store, window.patientId));
  const enc = new TextEncoder();
  const out = (s: string) => Deno.stdout.writeSync(enc.encode(`${s}\n`));
  out(
    `patient ${window.patientId}: ${count} events${from ? ` from ${from.toISOString()}` : ""}${
      to ? ` to ${to.toISOString()}` : ""
    }`,
  );
  for await (const e of timeline(store, window)) out(await fmt.line(e));
};

const { runtime } = await openCli();
try {
  const store = runtime.store;
  const [op] = await store.db.query<{ id: string; role: string; active: boolean }>(
    sql`select id::text as id, role, active from users
      where email = ${values.operator!.trim().toLowerCase()}`,
  );
  if (!op || !op.active || (op.role !== "admin" && op.role !== "auditor")) {
    refuse("the operator must be the email of an active admin or auditor account");
  } else if (!(await patientInLog(store, patientId))) {
    refuse("no such patient");
  } else {
    const window = {
      patientId,
      ...(from ? { from } : {}),
      ...(to ? { to } : {}),
      upTo: await store.headPosition(),
    };
    const count = await countTimeline(store, window);
    // fail-closed: an unaudited read of PHI never happens
    let audited = false;
    try {
      await store.append(`access-${op.id}`, "any", [{
        type: "AuditQueried",
        data: {
          query: "replay",
          filters: {
            patientId,
            ...(values.from ? { from: values.from } : {}),
            ...(values.to ? { to: values.to } : {}),
          },
          returned: count,
        },
      }], { actorId: op.id, actorRole: op.role, userAgent: "chartlog-cli" });
      audited = true;
    } catch {
      refuse("the replay could not be recorded in the log, so nothing is printed");
    }
    if (audited) await print(store, window, count);
  }
} finally {
  await runtime.close();
}
