//! Every command on every backend, from one table of cases: each case runs on
//! lock files and on each lock server (the real PostgreSQL server of
//! `LOCKFILE_TEST_DB`, `eval "$(scripts/postgres start)"`, and the real etcd
//! member of `LOCKFILE_TEST_ETCD`, `eval "$(scripts/etcd start)"`), and a
//! backend added to [`backends`] runs them all.
//!
//! The holders are `lockfile` processes: a case nests one `lockfile` in the
//! command of another, so the outer one holds the lock while the inner one
//! runs, with no sleeps and no background process.

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{output, stderr, stdout};
use lockfile_tests::LOCKCTL_COMPONENT;

const LOCKFILE: &str = env!("CARGO_BIN_EXE_lockfile");

/// Where a case's locks live.
enum Backend {
    Files {
        /// The lock directory of `run`; `exec` and `inspect` use paths in it.
        locks: tempfile::TempDir,
    },
    Database {
        url: String,
        namespace: String,
        /// How `inspect` tells the holder apart: `backend pid `, `etcd lease `.
        holder_kind: &'static str,
        /// The server, in a failure's message.
        which: &'static str,
    },
}

/// The URL in the environment variable `var`, which `script` prints.
fn server(var: &str, script: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run `eval \"$({script} start)\"` first, which starts a \
             throwaway server and prints the variables the tests need"
        )
    })
}

/// Every backend, each fresh for `case`.
fn backends(case: &str) -> Vec<Backend> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    vec![
        Backend::Files {
            locks: tempfile::tempdir().unwrap(),
        },
        Backend::Database {
            url: server("LOCKFILE_TEST_DB", "scripts/postgres"),
            namespace: format!("backends-{case}-{}-{nanos}", std::process::id()),
            holder_kind: "backend pid ",
            which: "PostgreSQL",
        },
        Backend::Database {
            url: server("LOCKFILE_TEST_ETCD", "scripts/etcd"),
            namespace: format!("backends-{case}-{}-{nanos}", std::process::id()),
            holder_kind: "etcd lease ",
            which: "etcd",
        },
    ]
}

impl Backend {
    /// The arguments that put a command's locks on this backend.
    fn args(&self) -> Vec<String> {
        match self {
            Backend::Files { .. } => Vec::new(),
            Backend::Database { url, namespace, .. } => vec![
                "--lock-db".into(),
                url.clone(),
                "--lock-namespace".into(),
                namespace.clone(),
            ],
        }
    }

    /// The name `exec` and `inspect` give the lock that `run --singleton
    /// LOCK` takes: its path in the lock directory, or on the database the
    /// name itself.
    fn name(&self, lock: &str) -> String {
        match self {
            Backend::Files { locks } => locks.path().join(lock).display().to_string(),
            Backend::Database { .. } => lock.to_owned(),
        }
    }

    /// How the holder of a lock is told apart by `inspect`.
    fn holder_kind(&self) -> &'static str {
        match self {
            Backend::Files { .. } => "pid ",
            Backend::Database { holder_kind, .. } => holder_kind,
        }
    }

    /// `lockfile SUBCOMMAND` on this backend, with no `LOCKFILE_DB` of the
    /// caller's; the arguments follow.
    fn lockfile(&self, subcommand: &str) -> Command {
        let mut command = common::lockfile();
        command
            .env_remove("LOCKFILE_DB")
            .arg(subcommand)
            .args(self.args());
        command
    }

    /// The argument list of the same, for a command run by `exec`.
    fn nested(&self, subcommand: &str, rest: &[&str]) -> Vec<String> {
        let mut args = vec![LOCKFILE.to_owned(), subcommand.to_owned()];
        args.extend(self.args());
        args.extend(rest.iter().map(|arg| (*arg).to_owned()));
        args
    }

    /// `lockfile exec OPTIONS NAME -- COMMAND`.
    fn exec(&self, options: &[&str], name: &str, command: &[String]) -> Output {
        output(
            self.lockfile("exec")
                .args(options)
                .arg(name)
                .arg("--")
                .args(command),
        )
    }

    /// `lockfile run` of lockctl with this backend's lock directory (or
    /// database) and the tests' shared compile cache.
    fn run_args(&self, options: &[&str], steps: &[&str]) -> Vec<String> {
        let locks = match self {
            Backend::Files { locks } => locks.path().to_path_buf(),
            Backend::Database { .. } => PathBuf::from("unused-locks"),
        };
        let mut args = vec!["--lock-dir".to_owned(), locks.display().to_string()];
        args.extend([
            "--cache-dir".to_owned(),
            common::cache_dir().display().to_string(),
        ]);
        args.extend(options.iter().map(|arg| (*arg).to_owned()));
        args.push(LOCKCTL_COMPONENT.to_owned());
        args.extend(steps.iter().map(|arg| (*arg).to_owned()));
        args
    }
}

/// Runs `case` on every backend, naming the backend in a failure.
fn on_every_backend(name: &str, case: impl Fn(&Backend)) {
    for backend in backends(name) {
        let which = match &backend {
            Backend::Files { .. } => "lock files",
            Backend::Database { which, .. } => which,
        };
        if let Err(panic) =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&backend)))
        {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{name} on {which}: {message}");
        }
    }
}

/// The pid `lockfile` writes for `{pid}`: the holder's own, which a nested
/// command learns as its parent.
fn record_of(out: &Output) -> String {
    stdout(out).trim().to_owned()
}

#[test]
fn exec_runs_the_command_under_the_lock_and_passes_its_status_on() {
    on_every_backend("status", |b| {
        let name = b.name("job.lock");
        let out = b.exec(&[], &name, &["sh".into(), "-c".into(), "exit 7".into()]);
        assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
        // Free again once the command has exited.
        let out = b.exec(&[], &name, &["true".into()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    });
}

#[test]
fn a_held_lock_refuses_a_second_exec_with_75_and_the_holders_record() {
    on_every_backend("held", |b| {
        let name = b.name("job.lock");
        // The outer exec holds; its command is the inner exec, which prints
        // the outer pid first, so the record can be checked.
        let inner = b.nested("exec", &[&name, "--", "touch", "/nonexistent/ran"]);
        let script = "echo $PPID; exec \"$@\"".to_owned();
        let mut command = vec!["sh".to_owned(), "-c".to_owned(), script, "sh".to_owned()];
        command.extend(inner);
        let out = b.exec(&[], &name, &command);
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        let holder = record_of(&out);
        assert_eq!(
            stderr(&out),
            format!("Couldn't lock '{name}': held by {holder}\n")
        );
    });
}

#[test]
fn inspect_shows_the_record_and_the_holder_while_held_and_takes_no_lock() {
    on_every_backend("inspect", |b| {
        let name = b.name("job.lock");
        let inner = b.nested("inspect", &[&name]);
        let out = b.exec(&["--content-template", "job {pid}"], &name, &inner);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let printed = stdout(&out);
        let lines: Vec<&str> = printed.lines().collect();
        assert!(lines[0].starts_with("content: job "), "{printed}");
        assert!(
            lines[1].starts_with(&format!("locked: yes ({}", b.holder_kind())),
            "{printed}"
        );
        // Once released: the last record, and free.
        let out = output(b.lockfile("inspect").arg(&name));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let after = stdout(&out);
        assert!(after.starts_with(lines[0]), "{after}");
        assert!(after.contains("\nlocked: no\n"), "{after}");
    });
}

#[test]
fn run_singleton_is_refused_while_exec_holds_the_same_lock() {
    on_every_backend("singleton", |b| {
        let name = b.name("run.lock");
        let args = b.run_args(&["--singleton", "run.lock"], &["held"]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let inner = b.nested("run", &args);
        let out = b.exec(&["--content-template", "outer"], &name, &inner);
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "Couldn't lock 'run.lock': held by outer\n",
            "the plugin must not start"
        );
        assert_eq!(stdout(&out), "");
    });
}

#[test]
fn a_wait_takes_the_lock_when_the_holder_releases() {
    on_every_backend("wait", |b| {
        let name = b.name("job.lock");
        // A holder of its own, not an ancestor of the waiter: a lock file's
        // descriptor is inherited by everything its command starts.
        let mut holder = b
            .lockfile("exec")
            .args(["--content-template", "holder"])
            .arg(&name)
            .args(["--", "sleep", "0.5"])
            .spawn()
            .unwrap();
        common::wait_until("the holder", || {
            let out = output(b.lockfile("inspect").arg(&name));
            stdout(&out).contains("content: holder\nlocked: yes")
        });
        let out = b.exec(&["--wait", "20s"], &name, &["true".into()]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(holder.wait().unwrap().success());
    });
}

#[test]
fn a_bad_template_exits_64_before_anything_is_locked() {
    on_every_backend("template", |b| {
        let name = b.name("job.lock");
        let out = b.exec(
            &["--content-template", "{nope}"],
            &name,
            &["touch".into(), "/nonexistent/ran".into()],
        );
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).starts_with("lockfile: "), "{}", stderr(&out));
        assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    });
}

#[test]
fn log_failures_logs_contention_in_exclusive_controls_words() {
    on_every_backend("log", |b| {
        let name = b.name("job.lock");
        let inner = b.nested("exec", &["--log-failures", &name, "--", "true"]);
        let out = b.exec(&["--content-template", "4242"], &name, &inner);
        assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("Error locking file {name}; pid=4242")),
            "{}",
            stderr(&out)
        );
    });
}
