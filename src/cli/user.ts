// `deno task user <command> …`: create a user, or act for one as an operator
// (unlock, reset-password, reset-mfa). Passwords are read from standard
// input (first line), so they never appear in shell history or the process
// list. Exit codes: 0 done, 1 refused (e.g. weak password, unknown user), 2
// bad usage.
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { ROLES } from "../../events/user.ts";
import { registerUser } from "../auth/accounts.ts";
import { type OperatorAct, resetMfa, resetPassword, unlockAccount } from "../auth/operator.ts";
import { ChartlogError, ValidationError } from "../errors.ts";
import type { Runtime } from "../runtime.ts";
import { openCli } from "./common.ts";

const OPERATOR_OPTIONS = {
  email: { type: "string" },
  operator: { type: "string" },
  reason: { type: "string" },
} as const satisfies ParseArgsOptionsConfig;

const OPERATOR_HELP = `  --email E        the user's email
  --operator A     your own admin account's email (recorded as who did it)
  --reason TEXT    why (recorded, sealed, with the event)`;

interface Command {
  summary: string;
  usage: string;
  options: ParseArgsOptionsConfig;
  required: string[];
  run(runtime: Runtime, values: Record<string, string>): Promise<string>;
}

const operatorAct = (v: Record<string, string>): OperatorAct => ({
  email: v.email!,
  operator: v.operator!,
  reason: v.reason!,
});

/** The first line of standard input. */
const readPassword = async (): Promise<string> => {
  const input = new TextDecoder().decode(await new Response(Deno.stdin.readable).arrayBuffer());
  return input.split(/\r?\n/)[0] ?? "";
};

const COMMANDS: Record<string, Command> = {
  create: {
    summary: "create a user; the password is read from standard input",
    usage: `usage: deno task user create --email E --role R --name N [--patient-id P] < password
  --email E        the new user's email (unique, case-insensitive)
  --role R         one of ${ROLES.join(", ")}
  --name N         display name
  --patient-id P   for role patient: the patient record the account belongs to (without it, a
                   family member, who sees nothing until a patient makes them a proxy)`,
    options: {
      email: { type: "string" },
      role: { type: "string" },
      name: { type: "string" },
      "patient-id": { type: "string" },
    },
    required: ["email", "role", "name"],
    run: async (runtime, v) => {
      if (!(ROLES as readonly string[]).includes(v.role!)) {
        throw new UsageError(`unknown role ${v.role}`);
      }
      const password = await readPassword();
      const user = await registerUser(
        runtime.store,
        {
          email: v.email!,
          name: v.name!,
          role: v.role as (typeof ROLES)[number],
          password,
          patientId: v["patient-id"] ?? null,
        },
        { actorId: "cli", actorRole: "admin", userAgent: "chartlog-cli" },
        runtime.passwordParams,
      );
      return `created user ${user.id} (${user.role})`;
    },
  },
  unlock: {
    summary: "lift a lock left by failed logins",
    usage: `usage: deno task user unlock --email E --operator A --reason TEXT\n${OPERATOR_HELP}`,
    options: OPERATOR_OPTIONS,
    required: ["email", "operator", "reason"],
    run: async (runtime, v) => {
      await unlockAccount(runtime, operatorAct(v));
      return `unlocked ${v.email}`;
    },
  },
  "reset-password": {
    summary: "set a new password (from standard input) and end the user's sessions",
    usage: `usage: deno task user reset-password --email E --operator A --reason TEXT < password
${OPERATOR_HELP}`,
    options: OPERATOR_OPTIONS,
    required: ["email", "operator", "reason"],
    run: async (runtime, v) => {
      await resetPassword(runtime, operatorAct(v), await readPassword());
      return `reset the password of ${v.email}; their sessions are ended`;
    },
  },
  "reset-mfa": {
    summary: "remove a lost second factor and end the user's sessions",
    usage: `usage: deno task user reset-mfa --email E --operator A --reason TEXT\n${OPERATOR_HELP}`,
    options: OPERATOR_OPTIONS,
    required: ["email", "operator", "reason"],
    run: async (runtime, v) => {
      await resetMfa(runtime, operatorAct(v));
      return `reset two-factor authentication of ${v.email}; their sessions are ended`;
    },
  },
};

const USAGE = `usage: deno task user <command> [options]

commands:
${Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(16)}${c.summary}`).join("\n")}

  -h, --help      this text; \`deno task user <command> --help\` for a command's options`;

class UsageError extends Error {}

const fail = (message: string, usage: string): never => {
  console.error(`error: ${message}\n\n${usage}`);
  Deno.exit(2);
};

const [name, ...rest] = Deno.args;
if (name === "--help" || name === "-h") {
  console.log(USAGE);
  Deno.exit(0);
}
if (name === undefined) fail("no command given", USAGE);
const command = Object.hasOwn(COMMANDS, name!)
  ? COMMANDS[name!]!
  : fail(`unknown command ${name}`, USAGE);

let values: Record<string, string | boolean | undefined>;
try {
  ({ values } = parseArgs({
    args: rest,
    strict: true,
    allowPositionals: false,
    options: { ...command.options, help: { type: "boolean", short: "h" } },
  }));
} catch (err) {
  // node:util names the offending option: "Unknown option '--x'", "Unexpected argument 'y'"
  fail((err as Error).message, command.usage);
}
if (values!.help) {
  console.log(command.usage);
  Deno.exit(0);
}
const missing = command.required.filter((o) => !values![o]);
if (missing.length > 0) fail(`missing ${missing.map((o) => `--${o}`).join(", ")}`, command.usage);

const { runtime } = await openCli();
try {
  console.log(await command.run(runtime, values! as Record<string, string>));
} catch (err) {
  if (err instanceof UsageError) {
    console.error(`error: ${err.message}\n\n${command.usage}`);
    Deno.exitCode = 2;
  } else if (err instanceof ValidationError) {
    console.error(`${err.message}: ${err.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
    Deno.exitCode = 1;
  } else if (err instanceof ChartlogError) {
    console.error(err.message);
    Deno.exitCode = 1;
  } else throw err;
} finally {
  await runtime.close();
}
