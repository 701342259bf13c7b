import { generateCheckpointKey } from "../src/audit/checkpoint.ts";
import assert from "node:assert/strict";
import { ConfigError, loadConfig } from "../src/config.ts";

Deno.test("config: defaults with no environment at all", () => {
  const c = loadConfig({});
  assert.equal(c.port, 8080);
  assert.equal(c.dataDir, "./data");
  assert.deepEqual(c.database, { kind: "pglite", dataDir: "./data/pglite" });
  assert.equal(c.env, "development");
  assert.equal(c.masterKey, null);
  assert.equal(c.logLevel, "info");
  assert.deepEqual(c.corsOrigins, []);
  assert.equal(c.http, true);
});

Deno.test("config: CHARTLOG_HTTP=off makes a worker instance; anything but on/off is refused", () => {
  assert.equal(loadConfig({ CHARTLOG_HTTP: "on" }).http, true);
  assert.equal(loadConfig({ CHARTLOG_HTTP: "off" }).http, false);
  assert.throws(() => loadConfig({ CHARTLOG_HTTP: "false" }), /CHARTLOG_HTTP/);
});

Deno.test("config: database URLs", () => {
  assert.deepEqual(loadConfig({ DATABASE_URL: "memory://" }).database, {
    kind: "pglite",
    dataDir: "memory://",
  });
  assert.deepEqual(loadConfig({ CHARTLOG_DATA_DIR: "/srv/cl" }).database, {
    kind: "pglite",
    dataDir: "/srv/cl/pglite",
  });
  assert.deepEqual(loadConfig({ DATABASE_URL: "postgres://u@db:5432/chartlog" }).database, {
    kind: "postgres",
    url: "postgres://u@db:5432/chartlog",
  });
});

Deno.test("config: a bad variable is named, its value never echoed", () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ PORT: "eighty" }, /PORT/],
    [{ PORT: "70000" }, /PORT/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL/],
    [{ DATABASE_URL: "mysql://x" }, /DATABASE_URL/],
    [{ CHARTLOG_MASTER_KEY: "c2hvcnQ=" }, /CHARTLOG_MASTER_KEY/],
    [
      { CHARTLOG_ENV: "production" },
      /CHARTLOG_MASTER_KEY: is required when CHARTLOG_ENV=production/,
    ],
    [
      { CHARTLOG_ENV: "production" },
      /CHARTLOG_CHECKPOINT_KEY: is required when CHARTLOG_ENV=production/,
    ],
    // 32 random bytes are no PKCS#8 Ed25519 key
    [
      { CHARTLOG_CHECKPOINT_KEY: "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXh4eHg=" },
      /CHARTLOG_CHECKPOINT_KEY/,
    ],
    [{ CHARTLOG_CHECKPOINT_EVENTS: "0" }, /CHARTLOG_CHECKPOINT_EVENTS/],
    [{ CHARTLOG_CHECKPOINT_SECONDS: "soon" }, /CHARTLOG_CHECKPOINT_SECONDS/],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => loadConfig(env), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, message);
      for (const v of Object.values(env)) {
        if (v !== "production") assert.ok(!e.message.includes(v), `echoed ${v}`);
      }
      return true;
    });
  }
  const key = btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));
  const checkpointKey = btoa(String.fromCharCode(...generateCheckpointKey()));
  const prod = loadConfig({
    CHARTLOG_ENV: "production",
    CHARTLOG_MASTER_KEY: key,
    CHARTLOG_CHECKPOINT_KEY: checkpointKey,
  });
  assert.equal(prod.masterKey?.length, 32);
  assert.ok(prod.checkpointKey && prod.checkpointKey.length > 32);
  assert.equal(prod.checkpointEvents, 1000);
  assert.equal(prod.checkpointSeconds, 60);
});

Deno.test("config: media settings, their defaults and a bad clamd URL", () => {
  const c = loadConfig({});
  assert.equal(c.mediaMaxBytes, 10 * 1024 * 1024);
  assert.equal(c.mediaMaxPixels, 50_000_000);
  assert.equal(c.blobDir, "./data/blobs");
  assert.equal(c.clamdUrl, null); // no scanner: uploads are recorded not_scanned
  assert.equal(c.imageWorkers, 2);
  assert.equal(c.uploadTimeoutSec, 300);
  assert.equal(c.imageQueue, 8);
  assert.equal(c.clamdTimeoutMs, 30_000);
  assert.equal(loadConfig({ CHARTLOG_IMAGE_QUEUE: "0" }).imageQueue, 0);
  assert.throws(() => loadConfig({ CHARTLOG_IMAGE_QUEUE: "-1" }), /CHARTLOG_IMAGE_QUEUE/);
  assert.throws(() => loadConfig({ CHARTLOG_CLAMD_TIMEOUT_MS: "0" }), /CHARTLOG_CLAMD_TIMEOUT_MS/);
  for (const url of ["tcp://clamav:3310", "tcp://[::1]:3310", "unix:///run/clamav/clamd.ctl"]) {
    assert.equal(loadConfig({ CHARTLOG_CLAMD_URL: url }).clamdUrl, url);
  }
  for (const url of ["http://clamav:3310", "tcp://clamav", "unix://relative.sock"]) {
    assert.throws(() => loadConfig({ CHARTLOG_CLAMD_URL: url }), /CHARTLOG_CLAMD_URL/);
  }
  assert.throws(() => loadConfig({ CHARTLOG_IMAGE_WORKERS: "0" }), /CHARTLOG_IMAGE_WORKERS/);
  assert.equal(loadConfig({ CHARTLOG_BLOB_DIR: "/srv/blobs" }).blobDir, "/srv/blobs");
});

Deno.test("config: the idle timeout must be longer than the access token's lifetime", () => {
  const c = loadConfig({});
  assert.equal(c.accessTokenTtlSec, 300);
  assert.equal(c.sessionIdleTimeoutSec, 900);
  for (const [ttl, idle] of [["900", "900"], ["600", "300"]]) {
    assert.throws(
      () => loadConfig({ CHARTLOG_ACCESS_TOKEN_TTL_S: ttl, CHARTLOG_SESSION_IDLE_TIMEOUT_S: idle }),
      (e: unknown) =>
        e instanceof ConfigError &&
        /CHARTLOG_SESSION_IDLE_TIMEOUT_S/.test(e.message) &&
        /CHARTLOG_ACCESS_TOKEN_TTL_S/.test(e.message),
    );
  }
  assert.throws(() => loadConfig({ CHARTLOG_ACCESS_TOKEN_TTL_S: "1200" }), ConfigError);
  assert.equal(
    loadConfig({ CHARTLOG_ACCESS_TOKEN_TTL_S: "600", CHARTLOG_SESSION_IDLE_TIMEOUT_S: "900" })
      .accessTokenTtlSec,
    600,
  );
});
