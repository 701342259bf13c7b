import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { type Config, ConfigError, loadConfig } from "../config.ts";
import { createLogger, type Logger } from "../logger.ts";
import { openRuntime, type Runtime } from "../runtime.ts";

/**
 * Parses a command's arguments strictly (node:util `parseArgs`, `strict: true`).
 * `--help` / `-h` prints `usage` on stdout and exits 0, whatever else is given;
 * an unknown option, a missing value or an unexpected argument is one line on
 * stderr and exit 2 (never a stack trace).
 *
 * @example
 * const { values } = parseCliArgs("gc", GC_USAGE, { "dry-run": { type: "boolean" } });
 */
export const parseCliArgs = <O extends ParseArgsOptionsConfig>(
  command: string,
  usage: string,
  options: O,
  opts: { positionals?: boolean } = {},
) => {
  const args = Deno.args;
  const end = args.indexOf("--");
  const flags = end === -1 ? args : args.slice(0, end);
  if (flags.includes("--help") || flags.includes("-h")) {
    console.log(usage);
    Deno.exit(0);
  }
  try {
    return parseArgs({
      args,
      options,
      strict: true,
      allowPositionals: opts.positionals ?? false,
    });
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    if (typeof code !== "string" || !code.startsWith("ERR_PARSE_ARGS")) throw err;
    // node's messages go on with advice about `--`; the first sentence says what is wrong
    return usageError(command, (err as Error).message.split(". ")[0]!);
  }
};

/** One line on stderr naming the command and pointing to `--help`; exit 2. */
export const usageError = (command: string, message: string): never => {
  console.error(`${command}: ${message} (see: deno task ${command} --help)`);
  Deno.exit(2);
};

/**
 * Configuration, a logger on stderr and a runtime without projection
 * workers, for `deno task` commands. On the embedded database, stop the
 * server first: one PGlite data directory serves one process at a time.
 */
export const openCli = async (): Promise<{ config: Config; log: Logger; runtime: Runtime }> => {
  let config: Config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      Deno.exit(2);
    }
    throw err;
  }
  const log = createLogger(config.logLevel === "info" ? "warn" : config.logLevel, {
    write: (line: string) => Deno.stderr.writeSync(new TextEncoder().encode(line)),
  });
  // only gc uses the blob directory, and it checks the directory is this database's itself
  const runtime = await openRuntime(config, log, { workers: false, claimBlobs: false });
  return { config, log, runtime };
};

/** A one-line progress bar on stderr (redrawn in place on a terminal). */
export const progressBar = (label: string) => {
  const tty = Deno.stderr.isTerminal();
  const enc = new TextEncoder();
  let lastPct = -1;
  return (done: number, total: number) => {
    const pct = total === 0 ? 100 : Math.floor((done / total) * 100);
    if (pct === lastPct && done !== total) return;
    lastPct = pct;
    const width = 30;
    const filled = Math.round((pct / 100) * width);
    const bar = `${label} [${"#".repeat(filled)}${
      "-".repeat(width - filled)
    }] ${pct}% ${done}/${total}`;
    Deno.stderr.writeSync(enc.encode(tty ? `\r${bar}` : `${bar}\n`));
    if (tty && done >= total) Deno.stderr.writeSync(enc.encode("\n"));
  };
};
