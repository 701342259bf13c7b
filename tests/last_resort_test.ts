/**
 * The server's last resort (src/last_resort.ts, installed by src/main.ts) in
 * a process of its own: what nobody awaited or caught is logged without its
 * message; a lost database connection lets the process carry on, anything
 * else ends it with status 1.
 */
import assert from "node:assert/strict";

const PHI = "Ada Lovelace 1990-12-10";

/** Runs `body` after installing the last resort with a real logger; its exit code and output. */
const run = async (body: string) => {
  const code = `
    import { installLastResort } from ${
    JSON.stringify(import.meta.resolve("../src/last_resort.ts"))
  };
    import { createLogger } from ${JSON.stringify(import.meta.resolve("../src/logger.ts"))};
    import { UnavailableError } from ${JSON.stringify(import.meta.resolve("../src/errors.ts"))};
    installLastResort(createLogger("info"));
    ${body}
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    cwd: new URL("..", import.meta.url),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  const lines = text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  return { code: out.code, text, lines };
};

Deno.test("last resort: a rejection nobody handles is logged without its message, and the process exits 1", async () => {
  const r = await run(`
    Promise.reject(Object.assign(new Error(${JSON.stringify(PHI)}), { code: "23505" }));
    setTimeout(() => console.log("still running"), 500);
  `);
  assert.equal(r.code, 1, r.text);
  assert.ok(!r.text.includes("Ada"), r.text);
  assert.ok(!r.text.includes("still running"), r.text);
  const fatal = r.lines.find((l) => l.msg === "unhandled rejection: exiting");
  assert.ok(fatal, r.text);
  assert.equal(fatal.level, 60);
  assert.equal(fatal.err.name, "Error");
  assert.equal(fatal.err.code, "23505");
  assert.ok(fatal.err.frames.length > 0);
});

Deno.test("last resort: an exception nobody catches is logged without its message, and the process exits 1", async () => {
  const r = await run(`
    setTimeout(() => { throw new TypeError(${JSON.stringify(PHI)}); }, 10);
    setTimeout(() => console.log("still running"), 500);
  `);
  assert.equal(r.code, 1, r.text);
  assert.ok(!r.text.includes("Ada"), r.text);
  assert.ok(!r.text.includes("still running"), r.text);
  const fatal = r.lines.find((l) => l.msg === "uncaught exception: exiting");
  assert.equal(fatal?.err.name, "TypeError", r.text);
});

Deno.test("last resort: a lost database connection nobody awaited is a warning, and the process carries on", async () => {
  const r = await run(`
    Promise.reject(new UnavailableError("the database connection was lost", { code: "CONNECTION_CLOSED" }));
    // a driver's own error for a terminated backend (57P01), as postgres.js rejects with it
    Promise.reject(Object.assign(new Error(${JSON.stringify(PHI)}), { code: "57P01" }));
    setTimeout(() => console.log("still running"), 200);
  `);
  assert.equal(r.code, 0, r.text);
  assert.ok(r.text.includes("still running"), r.text);
  assert.ok(!r.text.includes("Ada"), r.text);
  const warned = r.lines.filter((l) => l.msg.startsWith("a database connection error nobody"));
  assert.deepEqual(warned.map((l) => [l.level, l.err.code]), [[40, "CONNECTION_CLOSED"], [
    40,
    "57P01",
  ]]);
});
