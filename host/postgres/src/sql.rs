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
/// transaction lock on [`ADVISORY_KEY_BASE`], when the table is missing.
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
    PRIMARY KEY (namespace, name)
);
COMMENT ON TABLE {TABLE} IS
    'lockfile-postgres: one row per lock name, never deleted. key: the advisory lock key; token: the last fencing token; holder: the record of the last holder';
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

/// What both lock statements do once their `attempt` has run: if it took
/// the lock, record the holder and issue the next fencing token, in the same
/// statement. Selects whether the lock was taken, the token (NULL if the lock
/// was not taken, or if the name no longer maps to the key: never, unless the
/// table was edited by hand), and the holder's record as it stood before the
/// statement (for the `Locked` error).
///
/// The update runs only if the lock was taken (the InitPlan on `attempt` is
/// evaluated once, before any row), so a failed try writes nothing.
///
/// Parameters: key, namespace, name, record (NULL keeps the last one, as a
/// lock file without content keeps its bytes).
macro_rules! take_and_record {
    () => {
        "
taken AS (
    UPDATE lockfile_locks
       SET token = GREATEST(token + 1, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint),
           holder = COALESCE($4, holder),
           backend_pid = pg_backend_pid(),
           acquired_at = now()
     WHERE (SELECT ok FROM attempt) AND namespace = $2 AND name = $3 AND key = $1
 RETURNING token)
SELECT (SELECT ok FROM attempt), (SELECT token FROM taken),
       (SELECT holder FROM lockfile_locks WHERE namespace = $2 AND name = $3)"
    };
}

/// Takes the lock with one try (parameters and result: `take_and_record!`).
pub(crate) const TRY_LOCK: &str = concat!(
    "
WITH attempt AS MATERIALIZED (SELECT pg_try_advisory_lock($1) AS ok),",
    take_and_record!()
);

/// [`TRY_LOCK`] that waits in the server's queue for the lock, at most `$5`
/// (a `lock_timeout` value, local to this statement's transaction): SQLSTATE
/// 55P03 when it runs out. The same bound covers the row update.
pub(crate) const WAIT_LOCK: &str = concat!(
    "
WITH timeout AS MATERIALIZED (SELECT set_config('lock_timeout', $5, true) AS setting),
attempt AS MATERIALIZED (SELECT pg_advisory_lock($1)::text IS NOT NULL AS ok FROM timeout),",
    take_and_record!()
);

/// Parameter: key.
pub(crate) const UNLOCK: &str = "SELECT pg_advisory_unlock($1)";

/// A held lock's heartbeat: whether this session still holds the advisory
/// lock on the key (a bigint key shows in `pg_locks` as classid = high half,
/// objid = low half, objsubid = 1), and the token the name's row carries
/// now. Parameter: key.
pub(crate) const OWNS: &str = "
SELECT EXISTS (
         SELECT 1 FROM pg_locks
          WHERE locktype = 'advisory' AND granted AND objsubid = 1
            AND pid = pg_backend_pid()
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid),
       (SELECT token FROM lockfile_locks WHERE key = $1::bigint)";

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

/// The row, and the server process holding its advisory lock now, if any
/// (a bigint key shows in `pg_locks` as classid = high half, objid = low
/// half, objsubid = 1). Parameters: namespace, name.
pub(crate) const INSPECT: &str = "
SELECT l.holder, l.token, l.key, p.pid
  FROM lockfile_locks l
  LEFT JOIN pg_locks p
    ON p.locktype = 'advisory' AND p.granted AND p.objsubid = 1
   AND p.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND p.classid = (l.key >> 32)::oid AND p.objid = (l.key & 4294967295)::oid
 WHERE l.namespace = $1 AND l.name = $2";
