/** PostgreSQL advisory lock keys used by Chartlog (one namespace, fixed numbers). */
export const LOCK_MIGRATE = 72_620_001;
/** Serialises append transactions so global positions follow commit order. */
export const LOCK_APPEND = 72_620_002;
/** Base of per-projection worker locks: the key is hashtext('projection:' || name). */
export const projectionLockName = (name: string): string => `chartlog.projection:${name}`;
/** The grant sweeper's session lock: one sweeper active across instances. */
export const GRANT_SWEEPER_LOCK = "chartlog.sweeper:grants";
/** Serialises extensions of the transparency log's stored Merkle tree (src/audit/tlog_store.ts). */
export const LOCK_TLOG_BUILD = 72_620_003;
/** The checkpoint publisher's session lock: one publisher active across instances. */
export const CHECKPOINT_PUBLISHER_LOCK = "chartlog.tlog:publisher";
