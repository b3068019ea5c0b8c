//! A server restart while `lockfile exec --lock-db` holds a lock: the command
//! is stopped and the status says the lock was lost (76); a plugin's own lock
//! handle reports the loss (`held` turns false).
//!
//! Restarts the server of `LOCKFILE_TEST_DB` with `scripts/postgres restart`:
//! this is the only test in its binary, and cargo runs test binaries one at a
//! time, so no other test sees the restart.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Reaper, is_running, read_pid_file, wait_until};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");

#[test]
fn a_server_restart_stops_the_command_and_exits_76() {
    let url = std::env::var("LOCKFILE_TEST_DB").unwrap_or_else(|_| {
        panic!(
            "LOCKFILE_TEST_DB is not set: run `eval \"$(scripts/postgres start)\"` first: it \
             starts a throwaway PostgreSQL under target/postgres and prints the variables the tests need"
        )
    });
    // It can only restart the server scripts/postgres runs.
    let env = Command::new(SCRIPT).arg("env").output().unwrap();
    assert!(
        String::from_utf8_lossy(&env.stdout).contains(&format!("LOCKFILE_TEST_DB={url}\n")),
        "LOCKFILE_TEST_DB is not the server of scripts/postgres, which this test restarts"
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pid_file = dir.path().join("pid");
    let ns = format!("cli-restart-{}", std::process::id());
    let lockfile = |args: &[&str]| {
        let mut command = common::lockfile();
        command
            .env_remove("LOCKFILE_DB")
            .args(["exec", "--lock-db", &url, "--lock-namespace", &ns])
            // A short lease: the lock is free again soon after the restart.
            .args(["--lease", "3s"])
            .args(args);
        command
    };
    let mut reaper = Reaper::default();
    // A plugin holding a lock of its own, which waits for it to be lost
    // (and is stopped when it is).
    let plugin = reaper.spawn(
        common::lockfile()
            .env_remove("LOCKFILE_DB")
            .args([
                "run",
                "--lock-db",
                &url,
                "--lock-namespace",
                &ns,
                "--lease",
                "3s",
                "--cache-dir",
            ])
            .arg(common::cache_dir())
            .arg(lockfile_tests::LOCKCTL_COMPONENT)
            .args([
                "lock",
                "plugin.lock",
                "{pid}",
                "0",
                "held",
                "await-lost",
                "held",
            ]),
    );
    let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let holder = reaper.spawn(&mut lockfile(&["job.lock", "--", "sh", "-c", &script]));
    let command = read_pid_file(&pid_file);
    reaper.adopt(command);
    // Held: a second taker is refused.
    for lock in ["job.lock", "plugin.lock"] {
        wait_until(&format!("{lock} held"), || {
            common::output(lockfile(&[lock, "--", "true"]))
                .status
                .code()
                == Some(75)
        });
    }

    let start = Instant::now();
    let restart = Command::new(SCRIPT).arg("restart").status().unwrap();
    assert!(restart.success());
    let finished = reaper.finish(holder, Duration::from_secs(30));
    let stopped = start.elapsed();
    eprintln!("exec exited {stopped:?} after the restart began: {finished:?}");
    assert_eq!(finished.status.code(), Some(76), "{finished:?}");
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{finished:?}");
    assert!(
        lines[0].starts_with("lockfile: lost the lock on 'job.lock' while the command ran: "),
        "{finished:?}"
    );
    assert!(!is_running(command), "the command still runs");
    assert!(stopped < Duration::from_secs(20), "{stopped:?}");
    // The plugin is stopped as its lock is known lost, before it could go
    // on: exit 76, and it never printed what it would have after the loss.
    let plugin = reaper.finish(plugin, Duration::from_secs(30));
    assert_eq!(plugin.status.code(), Some(76), "{plugin:?}");
    let lines: Vec<&str> = plugin.stdout.lines().collect();
    assert_eq!(lines.get(1..), Some(&["held true"][..]), "{plugin:?}");
    assert!(
        plugin
            .stderr
            .starts_with("lockfile: lost the lock on 'plugin.lock' while the plugin ran: "),
        "{plugin:?}"
    );

    // The server is back: the lock can be taken again.
    wait_until("job.lock free again", || {
        common::output(lockfile(&["job.lock", "--", "true"]))
            .status
            .success()
    });
}
