// `deno task user create --email E --role R --name N [--patient-id P]`
// Creates a user; the password is read from standard input (first line), so
// it never appears in shell history or the process list.
import { parseArgs } from "node:util";
import { ROLES } from "../../events/user.ts";
import { registerUser } from "../auth/accounts.ts";
import { ChartlogError, ValidationError } from "../errors.ts";
import { openCli } from "./common.ts";

const usage = `usage: deno task user create --email E --role R --name N [--patient-id P] < password
roles: ${ROLES.join(", ")}`;

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    email: { type: "string" },
    role: { type: "string" },
    name: { type: "string" },
    "patient-id": { type: "string" },
  },
});
if (positionals[0] !== "create" || !values.email || !values.role || !values.name) {
  console.error(usage);
  Deno.exit(2);
}
if (!(ROLES as readonly string[]).includes(values.role)) {
  console.error(`unknown role ${values.role}\n${usage}`);
  Deno.exit(2);
}
const input = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
const password = input.split(/\r?\n/)[0] ?? "";

const { runtime } = await openCli();
try {
  const user = await registerUser(runtime.store, {
    email: values.email,
    name: values.name,
    role: values.role as (typeof ROLES)[number],
    password,
    patientId: values["patient-id"] ?? null,
  }, { actorId: "cli", actorRole: "admin", userAgent: "chartlog-cli" });
  console.log(`created user ${user.id} (${user.role})`);
} catch (err) {
  if (err instanceof ValidationError) {
    console.error(`${err.message}: ${err.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
    Deno.exitCode = 1;
  } else if (err instanceof ChartlogError) {
    console.error(err.message);
    Deno.exitCode = 1;
  } else throw err;
} finally {
  await runtime.close();
}
