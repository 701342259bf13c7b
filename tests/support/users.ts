import { Buffer } from "node:buffer";
import { randomBytes, scryptSync } from "node:crypto";
import type { Role } from "../../events/user.ts";
import { registerUser } from "../../src/auth/accounts.ts";
import type { Runtime } from "../../src/runtime.ts";

export const PASSWORD = "correct horse battery staple";

/** Creates a user straight through the account service (as the CLI does). */
export const createUser = async (runtime: Runtime, role: Role, email = `${role}@clinic.test`) =>
  await registerUser(
    runtime.store,
    {
      email,
      name: `Test ${role}`,
      role,
      password: PASSWORD,
      patientId: role === "patient" ? crypto.randomUUID() : null,
    },
    { actorId: "test-setup" },
    runtime.passwordParams,
  );

type App = { request: (path: string, init?: RequestInit) => Response | Promise<Response> };

/** Logs in over HTTP; returns the token pair and the response. */
export const login = async (app: App, email: string, password = PASSWORD) => {
  const res = await app.request("/v1/auth/login", {
    method: "POST",
    headers: { "content-type": "application/json", "user-agent": "chartlog-tests/1" },
    body: JSON.stringify({ email, password }),
  });
  const body = res.status === 200 ? await res.json() : await res.json();
  return { res, body };
};

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/**
 * A user whose stored hash uses tiny scrypt parameters, so that tests that
 * make many password checks (concurrent lockout) stay fast. A stored hash
 * carries its own parameters, so the login path verifies it as any other.
 */
export const createCheapUser = async (
  runtime: Runtime,
  role: Role,
  email = `${role}@clinic.test`,
) => {
  const salt = randomBytes(16);
  const key = scryptSync(PASSWORD.normalize("NFKC"), salt, 32, { N: 1024, r: 8, p: 1 });
  const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64").replace(/=+$/, "");
  const userId = crypto.randomUUID();
  await runtime.store.append(`user-${userId}`, "no_stream", [{
    type: "UserRegistered",
    data: {
      userId,
      email,
      name: `Test ${role}`,
      role,
      patientId: null,
      passwordHash: `scrypt$N=1024,r=8,p=1$${b64(salt)}$${b64(key)}`,
    },
  }], { actorId: "test-setup" });
  return { id: userId, email };
};
