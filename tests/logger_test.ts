import assert from "node:assert/strict";
import { createLogger } from "../src/logger.ts";

Deno.test("logger: PHI-bearing and secret fields are redacted", () => {
  const lines: string[] = [];
  const log = createLogger("info", { write: (l: string) => void lines.push(l) });
  log.info({
    patientId: "p-1",
    firstName: "Quentin",
    patient: { lastName: "Zebrafish", dateOfBirth: "1970-01-01", email: "q@z.example" },
    password: "hunter2hunter2",
    refreshToken: "rt-secret",
    req: { headers: { authorization: "Bearer abc.def.ghi", cookie: "rt=zzz" } },
    data: { notes: "itchy" },
  }, "something happened");
  const text = lines.join("");
  for (
    const leak of [
      "Quentin",
      "Zebrafish",
      "1970-01-01",
      "q@z.example",
      "hunter2",
      "rt-secret",
      "abc.def",
      "rt=zzz",
      "itchy",
    ]
  ) {
    assert.ok(!text.includes(leak), leak);
  }
  const line = JSON.parse(lines[0]!);
  assert.equal(line.patientId, "p-1");
  assert.equal(line.firstName, "[redacted]");
  assert.equal(line.msg, "something happened");
});
