import type { EventMetadata } from "../../events/metadata.ts";
import type { Role } from "../../events/user.ts";
import { ReplayedCodeError } from "../../projections/users.ts";
import { refusal, type SecondFactor } from "../domain/credentials.ts";
import { MfaRequiredError, UnauthorizedError } from "../errors.ts";
import { runCredentialCommand } from "./credentials.ts";
import { secondFactorEvent } from "./mfa.ts";
import type { EventStore } from "../store/event_store.ts";
import { sql } from "../store/sql.ts";
import { handleCommand } from "../domain/command_handler.ts";
import { type Amr, refreshOutcome, sessionDecider } from "../domain/session.ts";
import { endSession, sessionStream } from "./session_commands.ts";
import { type ScryptParams, verifyAgainstDummy, verifyPassword } from "./password.ts";
import type { Actor } from "./policy.ts";
import { newRefreshToken, refreshDigest, signAccessToken, verifyAccessToken } from "./tokens.ts";

export { LOCKOUT_FAILURES, LOCKOUT_MS } from "../domain/credentials.ts";

export interface SessionSettings {
  jwtKey: CryptoKey;
  mfaRequiredRoles: readonly Role[];
  accessTokenTtlSec: number;
  sessionIdleTimeoutSec: number;
  /** HMAC key for recovery-code digests (derived from the master key). */
  recoveryCodeKey: Uint8Array;
  /** Parameters of the dummy hash an unknown email is checked against (the ones new hashes get). */
  passwordParams?: Readonly<ScryptParams>;
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
  /** When this instance last wrote each session's last-seen mark (ms). */
  readonly #seen = new Map<string, number>();
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
    amr: readonly Amr[],
  ): Promise<Omit<TokenPair, "refreshToken">> {
    const ttl = this.settings.accessTokenTtlSec;
    return {
      accessToken: await signAccessToken(
        this.settings.jwtKey,
        { sub: userId, role, sid: sessionId, amr: [...amr] },
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
      await verifyAgainstDummy(password, this.settings.passwordParams); // the same cost as a wrong password
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
      : (await secondFactorEvent(this.store, this.settings.recoveryCodeKey, u.id, otp, now)
        .then((v) => v && { verified: v })) ?? "invalid";
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
    // the session keeps how it began: enrolling later elsewhere does not upgrade it
    const amr: Amr[] = u.mfa_enabled ? ["pwd", "otp"] : ["pwd"];
    await handleCommand(this.store, sessionDecider, sessionStream(sessionId), {
      type: "StartSession",
      sessionId,
      userId: u.id,
      refreshTokenDigest: refreshDigest(refreshToken),
      amr,
    }, { metadata: { ...metadata, actorId: u.id, actorRole: u.role }, unseal: false });
    return {
      ...(await this.#issue(u.id, u.role, sessionId, amr)),
      refreshToken,
      mfaEnrolmentRequired: !u.mfa_enabled && this.settings.mfaRequiredRoles.includes(u.role),
    };
  }

  /**
   * Rotates a refresh token: decided from the session's own stream and
   * appended at the version it was decided on. When two requests race with
   * one token, the loser's append conflicts; it re-reads the stream, finds
   * the token already rotated, and so revokes the session (a copied token
   * and its owner look exactly like this). An idle session cannot be
   * refreshed.
   */
  async refresh(refreshToken: string, metadata: EventMetadata): Promise<TokenPair> {
    const presented = refreshDigest(refreshToken);
    const [s] = await this.store.db.query<
      { session_id: string; user_id: string; active: boolean; role: Role }
    >(
      sql`select s.id::text as session_id, s.user_id::text as user_id, u.active, u.role
        from session_refresh_tokens t join sessions s on s.id = t.session_id
        join users u on u.id = s.user_id
        where t.digest = ${presented}`,
    );
    if (!s) throw new UnauthorizedError("invalid refresh token");
    const next = newRefreshToken();
    const [seen] = await this.store.db.query<{ last_seen: Date | string }>(
      sql`select last_seen from session_activity where session_id = ${s.session_id}::uuid`,
    );
    // a conflict means the token was rotated or the session ended meanwhile:
    // the handler decides again, now reuse or ended, and only a concurrent end
    // can conflict with that, so this settles in a round or two
    const r = await handleCommand(this.store, sessionDecider, sessionStream(s.session_id), {
      type: "RotateRefreshToken",
      presentedDigest: presented,
      nextDigest: refreshDigest(next),
      now: this.#now(),
      lastSeenAt: seen ? new Date(seen.last_seen) : null,
      idleTimeoutMs: this.settings.sessionIdleTimeoutSec * 1000,
      userActive: s.active,
    }, { metadata: { ...metadata, actorId: s.user_id, actorRole: s.role }, retry: 5 });
    const outcome = refreshOutcome(r.events);
    switch (outcome) {
      case "rotated":
        if (r.state.status === "none") break; // cannot be: a rotation needs a session
        return {
          ...(await this.#issue(r.state.userId, s.role, s.session_id, r.state.amr)),
          refreshToken: next,
        };
      case "reuse":
        throw new UnauthorizedError("refresh token reuse detected; the session is revoked");
      case "idle":
        throw new UnauthorizedError("the session timed out; log in again");
      case "inactive":
      case "ended":
        break;
      default:
        return outcome satisfies never;
    }
    throw new UnauthorizedError("invalid refresh token");
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
        amr: Amr[];
      }
    >(
      sql`select u.role, u.active, u.patient_id::text as patient_id, s.ended_at, s.amr
        from sessions s join users u on u.id = s.user_id
        where s.id = ${claims.sid}::uuid and s.user_id = ${claims.sub}::uuid`,
    );
    if (!r || r.ended_at || !r.active) {
      throw new UnauthorizedError("the session is no longer valid");
    }
    await this.#markSeen(claims.sid);
    return {
      userId: claims.sub,
      role: r.role,
      sessionId: claims.sid,
      patientId: r.patient_id,
      // judged by how this session began, not by the account's state today: a
      // password-only session stays enrol-only after the account enrols elsewhere
      mfaPending: this.settings.mfaRequiredRoles.includes(r.role) && !r.amr.includes("otp"),
    };
  }

  /**
   * Marks API activity for the idle timeout, which refresh reads. A row in a
   * table, not an event: at most one write per session per tenth of the
   * timeout, throttled here in memory and, across instances, by the `where`.
   */
  async #markSeen(sessionId: string): Promise<void> {
    const now = this.#now().getTime();
    const every = this.settings.sessionIdleTimeoutSec * 100; // a tenth, in ms
    const last = this.#seen.get(sessionId);
    if (last !== undefined && now - last < every && now >= last) return;
    this.#seen.set(sessionId, now);
    if (this.#seen.size > 10_000) {
      for (const [id, at] of this.#seen) if (now - at >= every) this.#seen.delete(id);
    }
    const at = new Date(now);
    const threshold = new Date(now - every);
    await this.store.db.query(sql`insert into session_activity (session_id, last_seen)
      values (${sessionId}::uuid, ${at}::timestamptz)
      on conflict (session_id) do update set last_seen = excluded.last_seen
      where session_activity.last_seen <= ${threshold}::timestamptz`);
  }

  /** Ends this session. */
  async logout(actor: Actor, metadata: EventMetadata): Promise<void> {
    await endSession(this.store, actor.sessionId, "logout", metadata);
  }

  /** Ends every open session of the user (every device), or all but `except`. */
  async logoutAll(actor: Actor, metadata: EventMetadata, except?: string): Promise<number> {
    const open = (await this.store.db.query<{ id: string }>(sql`select id::text as id from sessions
      where user_id = ${actor.userId}::uuid and ended_at is null`)).filter((s) => s.id !== except);
    await Promise.all(open.map((s) => endSession(this.store, s.id, "logout_all", metadata)));
    return open.length;
  }
}
