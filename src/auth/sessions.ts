import type { EventMetadata } from "../../events/metadata.ts";
import type { Role } from "../../events/user.ts";
import { ReplayedCodeError } from "../../projections/users.ts";
import { refusal, type SecondFactor } from "../domain/credentials.ts";
import { ConcurrencyError, MfaRequiredError, UnauthorizedError } from "../errors.ts";
import { runCredentialCommand } from "./credentials.ts";
import { secondFactorEvent } from "./mfa.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { verifyAgainstDummy, verifyPassword } from "./password.ts";
import type { Actor } from "./policy.ts";
import { newRefreshToken, refreshDigest, signAccessToken, verifyAccessToken } from "./tokens.ts";

export { LOCKOUT_FAILURES, LOCKOUT_MS } from "../domain/credentials.ts";

export interface SessionSettings {
  jwtKey: CryptoKey;
  mfaRequiredRoles: readonly Role[];
  accessTokenTtlSec: number;
  sessionIdleTimeoutSec: number;
  now?: () => Date;
}

export interface TokenPair {
  accessToken: string;
  tokenType: "Bearer";
  expiresIn: number;
  refreshToken: string;
}

/** A login's answer: the tokens, and whether the session may only enrol a second factor. */
export interface LoginResult extends TokenPair {
  mfaEnrolmentRequired: boolean;
}

const sessionStream = (id: string) => `session-${id}`;

/**
 * Same words for every credential failure, a lock and an unknown email
 * included: nothing tells which part was wrong or whether the account exists.
 */
export const BAD_CREDENTIALS = "invalid credentials or account temporarily locked";

/**
 * Logins, refresh-token rotation with reuse detection, logout and the
 * per-request session check. Every act is an event; secrets never are.
 */
export class Sessions {
  readonly #now: () => Date;
  constructor(readonly store: EventStore, readonly settings: SessionSettings) {
    this.#now = settings.now ?? (() => new Date());
  }

  /** The clock sessions and codes are judged by. */
  now(): Date {
    return this.#now();
  }

  async #issue(
    userId: string,
    role: Role,
    sessionId: string,
  ): Promise<Omit<TokenPair, "refreshToken">> {
    const ttl = this.settings.accessTokenTtlSec;
    return {
      accessToken: await signAccessToken(
        this.settings.jwtKey,
        { sub: userId, role, sid: sessionId },
        ttl,
        this.#now(),
      ),
      tokenType: "Bearer",
      expiresIn: ttl,
    };
  }

  /**
   * Checks email, password and second factor; on success opens a session.
   * Whether the attempt counts, locks or passes is decided atomically over
   * the account's auth stream (see src/domain/credentials.ts).
   */
  async login(
    email: string,
    password: string,
    metadata: EventMetadata,
    otp?: string,
  ): Promise<LoginResult> {
    const now = this.#now();
    const [u] = await this.store.db.query<{
      id: string;
      role: Role;
      active: boolean;
      mfa_enabled: boolean;
      pending: boolean;
      password_hash: string;
    }>(
      sql`select u.id::text as id, u.role, u.active, u.mfa_enabled, u.pending, c.password_hash
      from users u join user_credentials c on c.user_id = u.id
      where u.email = ${email.trim().toLowerCase()}`,
    );
    if (!u) {
      await verifyAgainstDummy(password); // the same cost as a wrong password
      await this.store.append(`login-${crypto.randomUUID()}`, "no_stream", [
        { type: "LoginFailed", data: { userId: null, reason: "unknown_email" } },
      ], metadata);
      throw new UnauthorizedError(BAD_CREDENTIALS);
    }
    // the password is checked even on a locked account: the same cost and
    // the same answer as an unknown email
    const passwordOk = await verifyPassword(password, u.password_hash);
    // a second factor is looked at only behind the right password
    let secondFactor: SecondFactor = !passwordOk || !u.mfa_enabled
      ? "not_enrolled"
      : !otp
      ? "missing"
      : (await secondFactorEvent(this.store, u.id, otp, now).then((v) => v && { verified: v })) ??
        "invalid";
    const sessionId = crypto.randomUUID();
    const attempt = () =>
      runCredentialCommand(this.store, {
        type: "AttemptLogin",
        userId: u.id,
        sessionId,
        now,
        passwordOk,
        account: u.pending ? "pending" : u.active ? "active" : "inactive",
        secondFactor,
      }, { ...metadata, actorId: u.id });
    const decided = await attempt().catch((err) => {
      if (!(err instanceof ReplayedCodeError)) throw err;
      secondFactor = "invalid"; // raced another login with the same code
      return attempt();
    });
    switch (refusal(decided)) {
      case null:
        break;
      case "pending_approval":
        // the password was right, so saying why is no help to a guesser
        throw new UnauthorizedError("the account awaits an administrator's approval");
      case "mfa_required":
        throw new MfaRequiredError("send the authenticator code (or a recovery code) as `otp`");
      case "bad_mfa_code":
        throw new UnauthorizedError("invalid second-factor code");
      default:
        // wrong password, locked or inactive: one answer, the one an unknown email gets
        throw new UnauthorizedError(BAD_CREDENTIALS);
    }
    const refreshToken = newRefreshToken();
    await this.store.append(sessionStream(sessionId), "no_stream", [{
      type: "UserLoggedIn",
      data: { sessionId, userId: u.id, refreshTokenDigest: refreshDigest(refreshToken) },
    }], { ...metadata, actorId: u.id, actorRole: u.role });
    return {
      ...(await this.#issue(u.id, u.role, sessionId)),
      refreshToken,
      mfaEnrolmentRequired: !u.mfa_enabled && this.settings.mfaRequiredRoles.includes(u.role),
    };
  }

  /**
   * Rotates a refresh token. An already-rotated token revokes the whole
   * session (it was copied); an idle session cannot be refreshed.
   */
  async refresh(refreshToken: string, metadata: EventMetadata): Promise<TokenPair> {
    const [s] = await this.store.db.query<{
      rotated: boolean;
      session_id: string;
      user_id: string;
      ended_at: Date | string | null;
      last_activity_at: Date | string;
      version: number;
      active: boolean;
      role: Role;
    }>(sql`select t.rotated, s.id::text as session_id, s.user_id::text as user_id, s.ended_at,
        s.last_activity_at, s.version, u.active, u.role
      from session_refresh_tokens t join sessions s on s.id = t.session_id
      join users u on u.id = s.user_id
      where t.digest = ${refreshDigest(refreshToken)}`);
    if (!s || s.ended_at) throw new UnauthorizedError("invalid refresh token");
    const meta = { ...metadata, actorId: s.user_id, actorRole: s.role };
    const end = async (reason: string, extra: { type: string; data: unknown }[] = []) => {
      await this.store.append(sessionStream(s.session_id), "any", [
        ...extra,
        { type: "SessionEnded", data: { sessionId: s.session_id, userId: s.user_id, reason } },
      ], meta);
    };
    if (s.rotated) {
      await end("refresh_reuse", [{
        type: "RefreshReuseDetected",
        data: { sessionId: s.session_id, userId: s.user_id },
      }]);
      throw new UnauthorizedError("refresh token reuse detected; the session is revoked");
    }
    if (!s.active) {
      await end("user_deactivated");
      throw new UnauthorizedError("invalid refresh token");
    }
    const idleMs = this.#now().getTime() - new Date(s.last_activity_at).getTime();
    if (idleMs > this.settings.sessionIdleTimeoutSec * 1000) {
      await end("idle_timeout");
      throw new UnauthorizedError("the session timed out; log in again");
    }
    const next = newRefreshToken();
    try {
      await this.store.append(sessionStream(s.session_id), Number(s.version), [{
        type: "SessionRefreshed",
        data: {
          sessionId: s.session_id,
          userId: s.user_id,
          refreshTokenDigest: refreshDigest(next),
        },
      }], meta);
    } catch (err) {
      // a concurrent refresh with the same token won the race
      if (err instanceof ConcurrencyError) throw new UnauthorizedError("invalid refresh token");
      throw err;
    }
    return { ...(await this.#issue(s.user_id, s.role, s.session_id)), refreshToken: next };
  }

  /**
   * The actor behind an access token: signature and claims, then the live
   * session and user (a logged-out session or deactivated user fails at once;
   * the role is the current one, not the one in the token).
   */
  async authenticate(accessToken: string): Promise<Actor> {
    const claims = await verifyAccessToken(this.settings.jwtKey, accessToken, this.#now());
    const [r] = await this.store.db.query<
      {
        role: Role;
        active: boolean;
        patient_id: string | null;
        ended_at: unknown;
        mfa_enabled: boolean;
      }
    >(
      sql`select u.role, u.active, u.patient_id::text as patient_id, s.ended_at, u.mfa_enabled
        from sessions s join users u on u.id = s.user_id
        where s.id = ${claims.sid}::uuid and s.user_id = ${claims.sub}::uuid`,
    );
    if (!r || r.ended_at || !r.active) {
      throw new UnauthorizedError("the session is no longer valid");
    }
    return {
      userId: claims.sub,
      role: r.role,
      sessionId: claims.sid,
      patientId: r.patient_id,
      mfaPending: !r.mfa_enabled && this.settings.mfaRequiredRoles.includes(r.role),
    };
  }

  /** Ends this session. */
  async logout(actor: Actor, metadata: EventMetadata): Promise<void> {
    await this.store.append(sessionStream(actor.sessionId), "any", [{
      type: "SessionEnded",
      data: { sessionId: actor.sessionId, userId: actor.userId, reason: "logout" },
    }], metadata);
  }

  /** Ends every open session of the user (every device), or all but `except`. */
  async logoutAll(actor: Actor, metadata: EventMetadata, except?: string): Promise<number> {
    const open = (await this.store.db.query<{ id: string }>(sql`select id::text as id from sessions
      where user_id = ${actor.userId}::uuid and ended_at is null`)).filter((s) => s.id !== except);
    await Promise.all(open.map((s) =>
      this.store.append(sessionStream(s.id), "any", [{
        type: "SessionEnded",
        data: { sessionId: s.id, userId: actor.userId, reason: "logout_all" },
      }], metadata)
    ));
    return open.length;
  }
}
