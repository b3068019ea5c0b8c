//! The table, and every statement sent.

/// The first advisory key: `"LOCK"` in ASCII in the high 32 bits, so this
/// crate's locks read as `classid = 1280262987` in `pg_locks` and keep clear
/// of the small keys applications pick by hand. The key itself guards the
/// creation of the table.
pub const ADVISORY_KEY_BASE: i64 = 0x4c4f_434b_0000_0000;

/// The oldest server whose SQL every statement here uses (`MATERIALIZED`).
pub(crate) const MIN_SERVER_VERSION: i32 = 12_0000;

pub(crate) const TABLE: &str = "lockfile_locks";

/// Run once per database, in a transaction holding the advisory
/// transaction lock on [`ADVISORY_KEY_BASE`], when the table is missing
/// (older tables get the leases' columns from [`ADD_LEASES`]).
pub(crate) fn schema() -> String {
    format!(
        r#"
CREATE TABLE {TABLE} (
    namespace text NOT NULL,
    name text NOT NULL,
    key bigint NOT NULL GENERATED ALWAYS AS IDENTITY (START WITH {start}) UNIQUE,
    token bigint NOT NULL DEFAULT 0,
    holder text,
    backend_pid integer,
    acquired_at timestamptz,
    lease_ends timestamptz,
    prior_lease_ends timestamptz,
    created_at timestamptz DEFAULT now(),
    PRIMARY KEY (namespace, name)
);
COMMENT ON TABLE {TABLE} IS
    'lockfile-postgres: one row per lock name, never deleted. key: the advisory lock key; token: the last fencing token; holder: the record of the last holder; lease_ends: when the holder''s lease ends by this server''s clock (NULL once released): until then a holder whose session ended may still run; prior_lease_ends: the lease the holder took over and waited out; created_at: when the row was made';
CREATE FUNCTION {TABLE}_keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{TABLE} rows are permanent: deleting or renaming one lets two holders of a lock both succeed';
END
$$;
CREATE TRIGGER {TABLE}_keep BEFORE DELETE OR UPDATE OF namespace, name, key ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION {TABLE}_keep();
"#,
        start = ADVISORY_KEY_BASE + 1
    )
}

/// Brings a table made before leases up to date; run like [`schema`], when
/// the table lacks `created_at`.
pub(crate) const ADD_LEASES: &str = "ALTER TABLE lockfile_locks
    ADD COLUMN IF NOT EXISTS lease_ends timestamptz,
    ADD COLUMN IF NOT EXISTS prior_lease_ends timestamptz,
    ADD COLUMN IF NOT EXISTS created_at timestamptz DEFAULT now()";

/// Whether the table exists, and whether it has the leases' columns (the
/// last of them, `created_at`). Parameter: the table's name.
pub(crate) const TABLE_STATE: &str = "SELECT to_regclass($1::text) IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_attribute
                WHERE attrelid = to_regclass($1::text) AND attname = 'created_at' AND NOT attisdropped)";

/// What both lock statements do once their `attempt` has run: if it took
/// the lock, record the holder and issue the next fencing token, in the same
/// statement. Selects whether the lock was taken, the token (NULL if the lock
/// was not taken, or if the name no longer maps to the key: never, unless the
/// table was edited by hand), the holder's record as it stood before the
/// statement if the lock was not taken (for the `Locked` error), and, when
/// taken, four of the
/// server's times (see `Taking`): the end of the last holder's lease (NULL
/// if it was released), which a holder whose session ended may run until;
/// the end of the new lease, and when the statement began, whose difference
/// less the lease is how long it waited in the queue, so that the holder can
/// count its deadline from when the lease started rather than from when it
/// sent the statement; and when it answered.
///
/// The new holder's lease starts with the statement. In READ COMMITTED the
/// update works on the newest version of the row even when the statement
/// waited for the lock, so `prior_lease_ends` is the last holder's last
/// renewal. A crash can lose the last commits (`synchronous_commit = off`,
/// or a server crash before the flush), a renewal among them: so for a row
/// last written before the server started, the lease taken over lasts at
/// least until a lease (`$5`) after the start, whatever the row says, since
/// a holder cut off by the crash may run until its last confirmed renewal's
/// lease ends, which is before that. (This assumes the holders of a name
/// use the same lease.) A row written since the start lost nothing.
///
/// The update runs only if the lock was taken (the InitPlan on `attempt` is
/// evaluated once, before any row), so a failed try writes nothing.
///
/// Parameters: key, namespace, name, record (NULL keeps the last one, as a
/// lock file without content keeps its bytes), the lease in microseconds.
macro_rules! take_and_record {
    () => {
        "
taken AS (
    UPDATE lockfile_locks
       SET token = GREATEST(token + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint),
           holder = COALESCE($4, holder),
           backend_pid = pg_backend_pid(),
           acquired_at = now(),
           prior_lease_ends = GREATEST(lease_ends,
               CASE WHEN GREATEST(acquired_at, created_at) < pg_postmaster_start_time()
                    THEN pg_postmaster_start_time() + $5::bigint * interval '1 microsecond'
               END),
           lease_ends = clock_timestamp() + $5::bigint * interval '1 microsecond'
     WHERE (SELECT ok FROM attempt) AND namespace = $2 AND name = $3 AND key = $1
 RETURNING token, prior_lease_ends, lease_ends, statement_timestamp() AS began,
           clock_timestamp() AS answered)
SELECT a.ok, t.token,
       CASE WHEN NOT a.ok THEN (SELECT holder FROM lockfile_locks WHERE namespace = $2 AND name = $3) END,
       t.prior_lease_ends, t.lease_ends, t.began, t.answered
  FROM attempt AS a LEFT JOIN taken AS t ON true"
    };
}

/// Takes the lock with one try (parameters and result: `take_and_record!`).
pub(crate) const TRY_LOCK: &str = concat!(
    "
WITH attempt AS MATERIALIZED (SELECT pg_try_advisory_lock($1) AS ok),",
    take_and_record!()
);

/// [`TRY_LOCK`] that waits in the server's queue for the lock, at most `$6`
/// (a `lock_timeout` value, local to this statement's transaction): SQLSTATE
/// 55P03 when it runs out. The same bound covers the row update.
pub(crate) const WAIT_LOCK: &str = concat!(
    "
WITH timeout AS MATERIALIZED (SELECT set_config('lock_timeout', $6, true) AS setting),
attempt AS MATERIALIZED (SELECT pg_advisory_lock($1)::text IS NOT NULL AS ok FROM timeout),",
    take_and_record!()
);

/// Parameter: key.
pub(crate) const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// A clean release, one statement: the lease is over (the next holder need
/// not wait it out), and the lock unlocked; selects whether it was held.
/// The row is updated first (the unlock reads the update's output), and a
/// taker that gets the lock before this commits updates the same row, so it
/// waits for this commit and sees the lease ended. A crash that loses it
/// only makes the next holder wait out the lease. Parameters: key, token.
pub(crate) const RELEASE: &str = "
WITH ended AS (
    UPDATE lockfile_locks SET lease_ends = NULL
     WHERE key = $1::bigint AND token = $2::bigint
 RETURNING 1)
SELECT pg_advisory_unlock($1::bigint) FROM (SELECT count(*) FROM ended) AS done";

/// A lock session's heartbeat, for every lock it holds: per key, whether
/// this session still holds the advisory lock (a bigint key shows in
/// `pg_locks` as classid = high half, objid = low half, objsubid = 1), the
/// token the key's row carries now, and whether its lease was renewed (`$3`
/// microseconds from now by the server's clock), which it is only while
/// both hold and the lease was not ended by a release.
/// Parameters: the keys, their tokens (two arrays in the same order), the
/// lease in microseconds.
pub(crate) const RENEW: &str = "
WITH held AS MATERIALIZED (
    SELECT (classid::bigint << 32) | objid::bigint AS key
      FROM pg_locks
     WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND pid = pg_backend_pid()
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())),
mine AS MATERIALIZED (
    SELECT m.key, m.token, m.key IN (SELECT key FROM held) AS holds
      FROM unnest($1::bigint[], $2::bigint[]) AS m(key, token)),
renewed AS (
    UPDATE lockfile_locks l
       SET lease_ends = clock_timestamp() + $3::bigint * interval '1 microsecond'
      FROM mine m
     WHERE l.key = m.key AND l.token = m.token AND m.holds AND l.lease_ends IS NOT NULL
 RETURNING l.key)
SELECT m.key, m.holds, (SELECT token FROM lockfile_locks WHERE key = m.key),
       m.key IN (SELECT key FROM renewed)
  FROM mine m";

/// After a wait that ended in an error: drop whatever the session holds (the
/// server may grant the lock in the very instant the wait is cancelled), and
/// read the holder for the error. Parameters: namespace, name.
pub(crate) const CLEAR: &str = "SELECT pg_advisory_unlock_all()::text,
       (SELECT holder FROM lockfile_locks WHERE namespace = $1 AND name = $2)";

/// Parameters: namespace, name.
pub(crate) const FIND_KEY: &str =
    "SELECT key FROM lockfile_locks WHERE namespace = $1 AND name = $2";

/// Creates the row of a new name; returns its key, or nothing if another
/// session created it concurrently (ask again). Parameters: namespace, name.
pub(crate) const CREATE_KEY: &str = "
WITH created AS (
    INSERT INTO lockfile_locks (namespace, name) VALUES ($1, $2)
    ON CONFLICT DO NOTHING RETURNING key)
SELECT key FROM created
UNION ALL
SELECT key FROM lockfile_locks WHERE namespace = $1 AND name = $2";

/// Parameters: namespace, name.
pub(crate) const READ: &str =
    "SELECT holder FROM lockfile_locks WHERE namespace = $1 AND name = $2";

/// The row, the server process holding its advisory lock now, if any (a
/// bigint key shows in `pg_locks` as classid = high half, objid = low half,
/// objsubid = 1), and the microseconds left on the last holder's lease by
/// the server's clock (NULL once released, 0 once ended). Parameters:
/// namespace, name.
pub(crate) const INSPECT: &str = "
SELECT l.holder, l.token, l.key, p.pid,
       -- GREATEST skips a NULL: a released lease stays NULL through the CASE.
       CASE WHEN l.lease_ends IS NOT NULL
            THEN GREATEST(0, extract(epoch FROM l.lease_ends - clock_timestamp()) * 1000000)::bigint
       END
  FROM lockfile_locks l
  LEFT JOIN pg_locks p
    ON p.locktype = 'advisory' AND p.granted AND p.objsubid = 1
   AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND p.classid = (l.key >> 32)::oid AND p.objid = (l.key & 4294967295)::oid
 WHERE l.namespace = $1 AND l.name = $2";
