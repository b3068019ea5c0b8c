//! `lockfile run` and `lockfile compile`, end to end, by spawning the binary on
//! guest components built from source.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use lockfile_core::LockFile;
use lockfile_tests::{LOCKCTL_COMPONENT, NEEDS_MISSING_COMPONENT, SINGLETON_JOB_COMPONENT};

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `lockfile run` with this sandbox's lock directory and cache.
    fn run(&self, options: &[&str], plugin: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_lockfile"))
            .arg("run")
            .arg("--lock-dir")
            .arg(self.path("locks"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .args(options)
            .arg(plugin)
            .args(args)
            .output()
            .unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn runs_a_plugin_that_takes_locks() {
    let s = Sandbox::new();
    let out = s.run(
        &["--name", "tester"],
        LOCKCTL_COMPONENT,
        &["lock", "a.lock", "{plugin} {pid}", "0", "read", "a.lock"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("locked tester "), "{lines:?}");
    assert_eq!(
        lines[1],
        format!("content {}", &lines[0]["locked ".len()..])
    );
    LockFile::lock(s.path("locks/a.lock")).expect("released when the plugin ended");
}

#[test]
fn the_plugin_name_defaults_to_the_file_stem() {
    let s = Sandbox::new();
    let out = s.run(&[], LOCKCTL_COMPONENT, &["lock", "a.lock", "{plugin}", "0"]);
    assert_eq!(stdout(&out), "locked lockctl\n");
}

#[test]
fn a_held_singleton_exits_75_and_the_plugin_never_starts() {
    let s = Sandbox::new();
    fs::create_dir(s.path("locks")).unwrap();
    let _held = lockfile_core::LockOptions::new()
        .content_template("other {pid}")
        .lock(s.path("locks/job.lock"))
        .unwrap();
    let out = s.run(
        &["--singleton", "job.lock"],
        LOCKCTL_COMPONENT,
        &["write", "/locks/../ran", "x"],
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        stderr(&out),
        format!(
            "Couldn't lock 'job.lock': held by other {}\n",
            std::process::id()
        )
    );
    assert_eq!(stdout(&out), "", "the plugin ran");
}

#[test]
fn the_singleton_is_held_for_the_whole_run() {
    let s = Sandbox::new();
    let out = s.run(
        &[
            "--singleton",
            "job.lock",
            "--content-template",
            "{plugin}",
            "--name",
            "single",
        ],
        LOCKCTL_COMPONENT,
        &["lock", "job.lock", "{pid}", "0", "cat", "/locks/job.lock"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "error Couldn't lock 'job.lock': held by single\nfile  single\n"
    );
    LockFile::lock(s.path("locks/job.lock")).expect("released after the run");
}

#[test]
fn singleton_usage_errors_exit_64() {
    let s = Sandbox::new();
    // The lock name rules, as for a plugin's names (`a/b` is a name too).
    for name in ["../escape", "/abs.lock", "", ".", "a/.."] {
        let out = s.run(&["--singleton", name], LOCKCTL_COMPONENT, &[]);
        assert_eq!(out.status.code(), Some(64), "{name:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("lockfile: --singleton {name:?}: ")),
            "{}",
            stderr(&out)
        );
    }
    let out = s.run(
        &["--singleton", "x.lock", "--content-template", "{oops}"],
        LOCKCTL_COMPONENT,
        &[],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown field {oops}"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("locks/x.lock").exists());
    let out = s.run(&["--wait", "1s"], LOCKCTL_COMPONENT, &[]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "--wait needs --singleton: {}",
        stderr(&out)
    );
}

#[test]
fn a_trap_exits_134_with_its_message_and_frees_the_locks() {
    let s = Sandbox::new();
    let out = s.run(
        &["--singleton", "s.lock"],
        LOCKCTL_COMPONENT,
        &["lock", "held.lock", "{pid}", "0", "trap"],
    );
    assert_eq!(out.status.code(), Some(134));
    assert!(
        stderr(&out).starts_with("lockfile: plugin trapped: "),
        "{}",
        stderr(&out)
    );
    LockFile::lock(s.path("locks/held.lock")).unwrap();
    LockFile::lock(s.path("locks/s.lock")).unwrap();
}

#[test]
fn the_timeout_stops_a_spinning_plugin_and_a_sleeping_one() {
    let s = Sandbox::new();
    for args in [
        &["lock", "t.lock", "{pid}", "0", "spin"][..],
        &["lock", "t.lock", "{pid}", "0", "sleep", "600000"],
    ] {
        let out = s.run(&["--timeout", "300ms"], LOCKCTL_COMPONENT, args);
        assert_eq!(out.status.code(), Some(124), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "lockfile: plugin stopped: --timeout 300ms exceeded\n"
        );
        LockFile::lock(s.path("locks/t.lock")).unwrap();
    }
}

#[test]
fn the_timeout_caps_a_lock_wait() {
    let s = Sandbox::new();
    fs::create_dir(s.path("locks")).unwrap();
    let _held = LockFile::lock(s.path("locks/w.lock")).unwrap();
    let start = std::time::Instant::now();
    let out = s.run(
        &["--timeout", "300ms"],
        LOCKCTL_COMPONENT,
        &["lock", "w.lock", "{pid}", "600000"],
    );
    // The run's clock starts before the plugin is instantiated, the wait's
    // cap (max_wait = the same 300ms) only when the plugin asks for the lock:
    // the timeout ends the run first, while the plugin is still waiting.
    assert_eq!(
        (
            out.status.code(),
            stderr(&out).as_str(),
            stdout(&out).as_str()
        ),
        (
            Some(124),
            "lockfile: plugin stopped: --timeout 300ms exceeded\n",
            ""
        ),
        "the 600 s wait was not stopped by --timeout"
    );
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn the_memory_limit_traps_with_its_name() {
    let s = Sandbox::new();
    let out = s.run(
        &["--max-memory", "4MiB"],
        LOCKCTL_COMPONENT,
        &["lock", "m.lock", "memory", "0", "alloc", "16"],
    );
    assert_eq!(out.status.code(), Some(134), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-memory 4.0 MiB exceeded"),
        "{}",
        stderr(&out)
    );
    // The lock step ran; the allocation trapped before printing.
    assert_eq!(stdout(&out), "locked memory\n");
    LockFile::lock(s.path("locks/m.lock")).unwrap();
    let out = s.run(
        &["--max-memory", "64MiB"],
        LOCKCTL_COMPONENT,
        &["alloc", "16"],
    );
    assert_eq!(stdout(&out), "allocated\n", "{}", stderr(&out));
}

#[test]
fn max_locks_is_passed_to_the_plugin() {
    let s = Sandbox::new();
    let out = s.run(
        &["--max-locks", "2"],
        LOCKCTL_COMPONENT,
        &["hold-many", "3"],
    );
    assert_eq!(
        stdout(&out),
        "held 2\nerror too many locks: this plugin may hold 2\n"
    );
}

#[test]
fn the_second_run_loads_from_the_compile_cache() {
    let s = Sandbox::new();
    let first = s.run(&["-v"], LOCKCTL_COMPONENT, &[]);
    assert!(
        stderr(&first).contains("compile cache miss"),
        "{}",
        stderr(&first)
    );
    let second = s.run(&["-v"], LOCKCTL_COMPONENT, &[]);
    assert!(
        stderr(&second).contains("compile cache hit"),
        "{}",
        stderr(&second)
    );
    assert!(!stderr(&second).contains("compile cache miss"));
    assert_eq!(fs::read_dir(s.path("cache")).unwrap().count(), 1);
}

#[test]
fn compile_fills_the_cache_ahead_of_the_run() {
    let s = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .args(["compile", "--cache-dir"])
        .arg(s.path("cache"))
        .arg(SINGLETON_JOB_COMPONENT)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let entry = stdout(&out);
    assert!(Path::new(entry.trim()).exists(), "{entry}");
    let run = s.run(&["-v"], SINGLETON_JOB_COMPONENT, &["0"]);
    assert!(
        stderr(&run).contains(&format!("compile cache hit: {}", entry.trim())),
        "{}",
        stderr(&run)
    );
    assert!(stdout(&run).contains("done, lock released"));
}

#[test]
fn hostile_lock_paths_are_refused() {
    let s = Sandbox::new();
    fs::create_dir_all(s.path("locks")).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), s.path("locks/up")).unwrap();
    let out = s.run(
        &[],
        LOCKCTL_COMPONENT,
        &[
            "lock",
            "../x",
            "{pid}",
            "0",
            "lock",
            "up/x",
            "{pid}",
            "0",
            "lock",
            "/etc/passwd",
            "{pid}",
            "0",
        ],
    );
    assert_eq!(
        stdout(&out),
        "error not permitted: '../x' leads outside the lock directory: its '..' climbs above it\n\
         error not permitted: 'up/x' leads outside the lock directory (through a symbolic link)\n\
         error not permitted: '/etc/passwd' is absolute: lock paths are relative to the lock directory (try 'etc/passwd')\n"
    );
    assert!(!s.path("x").exists());
}

#[test]
fn the_lock_directory_is_visible_read_only_at_slash_locks() {
    let s = Sandbox::new();
    let out = s.run(
        &[],
        LOCKCTL_COMPONENT,
        &[
            "lock",
            "a.lock",
            "visible",
            "0",
            "cat",
            "/locks/a.lock",
            "write",
            "/locks/a.lock",
            "overwritten",
            "write",
            "/locks/new",
            "x",
        ],
    );
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines[..2], ["locked visible", "file  visible"]);
    assert!(lines[2].starts_with("error "), "{lines:?}");
    assert!(lines[3].starts_with("error "), "{lines:?}");
    assert_eq!(
        fs::read_to_string(s.path("locks/a.lock")).unwrap(),
        " visible\n"
    );
    assert!(!s.path("locks/new").exists());
}

#[test]
fn the_plugin_sees_no_environment_and_no_other_files() {
    let s = Sandbox::new();
    let out = s.run(
        &[],
        LOCKCTL_COMPONENT,
        &["cat", "/etc/hostname", "write", "/tmp/x", "y", "env"],
    );
    assert!(
        std::env::vars_os().count() > 0,
        "lockfile inherits this environment"
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // No preopen covers /etc or /tmp: WASI's ENOENT (44) for both.
    assert_eq!(
        stdout(&out),
        "error No such file or directory (os error 44)\n\
         error No such file or directory (os error 44)\n\
         env 0\n"
    );
}

#[test]
fn extra_directories_are_preopened() {
    let s = Sandbox::new();
    fs::create_dir(s.path("data")).unwrap();
    let dir = format!("{}::/data", s.path("data").display());
    let out = s.run(
        &["--dir", &dir],
        LOCKCTL_COMPONENT,
        &["write", "/data/out", "hello", "cat", "/data/out"],
    );
    assert_eq!(stdout(&out), "wrote\nfile hello\n", "{}", stderr(&out));
    assert_eq!(fs::read_to_string(s.path("data/out")).unwrap(), "hello");
    let out = s.run(&["--dir", "nonsense"], LOCKCTL_COMPONENT, &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn bad_plugin_files_get_one_clear_line() {
    let s = Sandbox::new();
    fs::write(s.path("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    fs::write(s.path("text.wasm"), "not wasm").unwrap();
    fs::write(s.path("library.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    fs::write(s.path("app.py"), "print('hello')\n").unwrap();
    fs::write(s.path("app.js"), "console.log('hello');\n").unwrap();
    let cases = [
        (s.path("missing.wasm"), "cannot read plugin"),
        (
            s.path("core.wasm"),
            "is a core WebAssembly module, not a component",
        ),
        (s.path("text.wasm"), "is not a WebAssembly component"),
        (
            env!("CARGO_BIN_EXE_lockfile").into(),
            "is a native executable, not a WebAssembly component: `lockfile run` runs WebAssembly components",
        ),
        // Each language's own advice, not Rust's.
        (
            s.path("app.py"),
            "app.py' is Python source: make a component of it with componentize-py",
        ),
        (
            s.path("app.js"),
            "app.js' is JavaScript source: make a component of it with componentize-js",
        ),
        (
            s.path("library.wasm"),
            "is not a command: it does not export wasi:cli/run",
        ),
        (
            NEEDS_MISSING_COMPONENT.into(),
            "imports instance `test:missing/gadget`",
        ),
    ];
    for (plugin, expected) in cases {
        let out = s.run(&[], plugin.to_str().unwrap(), &[]);
        assert_eq!(out.status.code(), Some(65), "{plugin:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("lockfile: ") && err.contains(expected),
            "{plugin:?}: {err}"
        );
        assert!(
            !err.contains("backtrace") && !err.contains("panicked"),
            "{err}"
        );
        if plugin
            .extension()
            .is_some_and(|ext| ext == "py" || ext == "js")
        {
            assert!(!err.contains("wasm32-wasip2"), "Rust advice: {err}");
        }
        assert!(
            !s.path("locks").exists(),
            "{plugin:?} created the lock directory"
        );
    }
}

#[test]
fn two_singleton_jobs_race_and_one_reports_the_other() {
    let s = Sandbox::new();
    let first = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .arg("run")
        .arg("--lock-dir")
        .arg(s.path("locks"))
        .arg("--cache-dir")
        .arg(s.path("cache"))
        .args([SINGLETON_JOB_COMPONENT, "50"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while lockfile_core::read_content(s.path("locks/job.lock"))
        .ok()
        .flatten()
        .is_none()
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = s.run(&[], SINGLETON_JOB_COMPONENT, &["1"]);
    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    // The plugin asks for 75 with `lockfile_guest::exit`, and gets it.
    assert_eq!(second.status.code(), Some(75));
    assert_eq!(
        stderr(&second),
        format!(
            "Couldn't lock 'job.lock': held by singleton-job on {}, pid {}\n",
            hostname(),
            first.id()
        )
    );
    assert_eq!(stdout(&second), "");
}

#[test]
fn a_plugin_exits_with_the_status_it_asks_for() {
    let s = Sandbox::new();
    for code in [0, 3, 75, 255] {
        let out = s.run(
            &[],
            LOCKCTL_COMPONENT,
            &[
                "lock",
                "a.lock",
                "{pid}",
                "0",
                "exit-code",
                &code.to_string(),
            ],
        );
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(stderr(&out), "", "an exit is not a failure of lockfile's");
    }
    LockFile::lock(s.path("locks/a.lock")).expect("released when the plugin exited");
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn a_missing_extra_directory_exits_64_and_creates_nothing() {
    let s = Sandbox::new();
    let out = s.run(
        &["--dir", "/missing-dir-for-lockfile-tests::/data"],
        LOCKCTL_COMPONENT,
        &[],
    );
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .starts_with("lockfile: --dir /missing-dir-for-lockfile-tests::/data: cannot use"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("locks").exists(), "64 promises nothing touched");
}

#[test]
fn a_lock_dir_that_is_a_file_says_so() {
    let s = Sandbox::new();
    fs::write(s.path("locks"), "").unwrap();
    let out = s.run(&[], LOCKCTL_COMPONENT, &[]);
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "lockfile: --lock-dir '{}' is not a directory: give a directory for the plugin's lock files\n",
            s.path("locks").display()
        )
    );
}

/// A directory no lock file can be made in (`/proc` takes no new file, even
/// from root) is refused before the plugin starts, naming it; a usable one
/// is left as it was found (the check's probe file is removed).
#[test]
fn a_lock_dir_that_cannot_hold_lock_files_is_refused_before_the_plugin_starts() {
    let s = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .args(["run", "--lock-dir", "/proc"])
        .arg(LOCKCTL_COMPONENT)
        .args(["lock", "my.lock", "x", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with(
            "lockfile: --lock-dir '/proc' cannot hold lock files: creating one there fails ("
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "the plugin never ran");

    let out = s.run(&[], LOCKCTL_COMPONENT, &["lock", "a.lock", "x", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let names: Vec<_> = fs::read_dir(s.path("locks"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(names, ["a.lock"]);
}

#[test]
fn an_unusable_compile_cache_warns_and_runs_uncached() {
    let s = Sandbox::new();
    // Root can write anywhere: a cache directory beneath a regular file is
    // unusable for everyone.
    fs::write(s.path("not-a-dir"), "").unwrap();
    let cache = s.path("not-a-dir/cache");
    let out = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .args(["run", "--lock-dir"])
        .arg(s.path("locks"))
        .arg("--cache-dir")
        .arg(&cache)
        .arg(LOCKCTL_COMPONENT)
        .args(["lock", "a.lock", "cached-not", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "locked cached-not\n");
    let warnings: Vec<_> = stderr(&out)
        .lines()
        .filter(|line| line.contains("running uncached: the compile cache is unusable"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&out));

    // `lockfile compile` exists to fill the cache: there it is an I/O error,
    // not a bad plugin.
    let out = Command::new(env!("CARGO_BIN_EXE_lockfile"))
        .args(["compile", "--cache-dir"])
        .arg(&cache)
        .arg(LOCKCTL_COMPONENT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("lockfile: the compile cache is unusable: cache directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_singleton_error_names_the_system_reason_once() {
    let s = Sandbox::new();
    fs::create_dir_all(s.path("locks/run.lock")).unwrap();
    let out = s.run(
        &["--singleton", "run.lock"],
        LOCKCTL_COMPONENT,
        &["touch", "x"],
    );
    assert_eq!(out.status.code(), Some(74), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(err.matches("Is a directory").count(), 1, "{err}");
    assert!(
        err.starts_with("lockfile: --singleton: couldn't open 'run.lock'"),
        "{err}"
    );
}

#[test]
fn max_lock_files_is_passed_to_the_plugin() {
    let s = Sandbox::new();
    let out = s.run(
        &["--max-lock-files", "3"],
        LOCKCTL_COMPONENT,
        &["create-many", "10"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "created 3\nerror not permitted: this plugin may create at most 3 lock files and has created them all: reuse existing lock names\n"
    );
    assert_eq!(fs::read_dir(s.path("locks")).unwrap().count(), 3);
}

#[test]
fn a_bad_size_gives_examples() {
    let s = Sandbox::new();
    let out = s.run(&["--max-memory", "lots"], LOCKCTL_COMPONENT, &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("not a size: \"lots\" (examples: 64MiB, 512MB, 1GiB)"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("locks").exists());
}

#[test]
fn log_failures_logs_a_held_singleton() {
    let s = Sandbox::new();
    fs::create_dir(s.path("locks")).unwrap();
    let _held = lockfile_core::LockOptions::new()
        .content_template("other")
        .lock(s.path("locks/run.lock"))
        .unwrap();
    let out = s.run(
        &["--singleton", "run.lock", "--log-failures"],
        LOCKCTL_COMPONENT,
        &[],
    );
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|line| line.ends_with("Error locking file run.lock; pid=other")),
        "{err}"
    );
    assert!(
        err.ends_with("Couldn't lock 'run.lock': held by other\n"),
        "{err}"
    );
}
