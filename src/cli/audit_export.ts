// `deno task audit export`: the log as JSON lines (as stored), CSV or a FHIR
// BALP Bundle, to a file or stdout, with a progress bar on stderr.
// (Run through src/cli/audit.ts, which picks the subcommand's module.)
import { z } from "zod";
import { EXPORT_FORMATS } from "../../events/audit.ts";
import {
  countExport,
  type ExportFilter,
  type ExportFormat,
  exportStream,
  exportUpTo,
} from "../audit/export.ts";
import { operatorMetadata } from "../auth/operator.ts";
import { ChartlogError } from "../errors.ts";
import { openCli, parseCliArgs, progressBar, usageError } from "./common.ts";

const USAGE = `usage: deno task audit export --format jsonl|csv|fhir --operator EMAIL --reason TEXT
         [--from TIME] [--to TIME] [--patient ID] [--out FILE]

export   writes the log, oldest first, up to the event it started at:
           jsonl  one line per event exactly as stored (sealed fields sealed,
                  hashes included): what audit verify --export reads
           csv    readable columns, RFC 4180
           fhir   a FHIR R4 Bundle of IHE BALP AuditEvents
  --from TIME     recorded at or after (ISO 8601 with offset)
  --to TIME       recorded before (exclusive)
  --patient ID    only events about this patient (as GET /v1/audit/events?patientId=)
  --out FILE      write there (default: stdout)
  --operator A    your own admin account's email (the export is audited as yours)
  --reason TEXT   why (recorded with the AuditExported event)
A progress bar goes to stderr. On the embedded database, stop the server first.`;

const { values, positionals } = parseCliArgs("audit", USAGE, {
  format: { type: "string" },
  from: { type: "string" },
  to: { type: "string" },
  patient: { type: "string" },
  out: { type: "string" },
  operator: { type: "string" },
  reason: { type: "string" },
}, { positionals: true });
if (positionals.length > 1) usageError("audit", `unexpected argument '${positionals[1]}'`);
for (const o of ["format", "operator", "reason"] as const) {
  if (!values[o]) usageError("audit", `export needs --${o}`);
}
const format = values.format as ExportFormat;
if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
  usageError("audit", `--format must be one of ${EXPORT_FORMATS.join(", ")}`);
}
const at = z.iso.datetime({ offset: true });
for (const o of ["from", "to"] as const) {
  if (values[o] !== undefined && !at.safeParse(values[o]).success) {
    usageError("audit", `--${o} must be an ISO 8601 time with an offset`);
  }
}
if (values.from && values.to && Date.parse(values.from) > Date.parse(values.to)) {
  usageError("audit", "--to is before --from");
}
if (values.patient !== undefined && !z.uuid().safeParse(values.patient).success) {
  usageError("audit", "--patient must be a patient id (UUID)");
}
const filter: ExportFilter = {
  ...(values.patient ? { patientId: values.patient } : {}),
  ...(values.from ? { from: new Date(values.from) } : {}),
  ...(values.to ? { to: new Date(values.to) } : {}),
};

const { runtime } = await openCli();
try {
  const store = runtime.store;
  const metadata = await operatorMetadata(runtime, values.operator!, values.reason!);
  const upTo = await exportUpTo(store);
  const total = await countExport(store, filter, upTo);
  // fail-closed: the export is in the log before its first byte is written
  await store.append(`access-${metadata.actorId}`, "any", [{
    type: "AuditExported",
    data: {
      format,
      filters: {
        ...(values.patient ? { patientId: values.patient } : {}),
        ...(values.from ? { from: values.from } : {}),
        ...(values.to ? { to: values.to } : {}),
      },
      upTo,
      events: total,
    },
  }], metadata);
  const bar = progressBar(`export ${format}`);
  bar(0, total);
  const body = exportStream(store, format, filter, {
    upTo,
    server: Deno.hostname(),
    now: runtime.sessions.now(),
    onProgress: (done) => bar(done, total),
  });
  if (values.out) {
    const file = await Deno.open(values.out, { write: true, create: true, truncate: true });
    await body.pipeTo(file.writable);
  } else {
    await body.pipeTo(Deno.stdout.writable, { preventClose: true });
  }
  console.error(
    `exported ${total} events (${format}, up to position ${upTo})${
      values.out ? ` to ${values.out}` : ""
    }`,
  );
} catch (err) {
  if (!(err instanceof ChartlogError)) throw err;
  console.error(`audit export: ${err.message}`);
  Deno.exitCode = 1;
} finally {
  await runtime.close();
}
